"""ImageNet (ILSVRC-2012) as torchvision ImageFolders with the paper's recipe transforms.

Layout: ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG`` (val reorganised into class
folders). ImageNet cannot be downloaded automatically; :func:`dlarepro.data.synthetic.write_synthetic_imagefolder`
writes a tiny stand-in in the same layout, marked by ``root/SYNTHETIC``.

Training augmentation uses torchvision's transforms, which draw from torch's global RNG; the train
set reseeds that RNG per sample from (seed, epoch, index), inside a fork of the RNG state, so the
augmentation is resumable and independent of worker count, like :class:`~dlarepro.data.cifar.CifarDataset`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torchvision.datasets import ImageFolder

from .common import MARKER, CorruptDatasetError, DatasetNotFoundError, read_marker, sample_seed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val")


def how_to_get_imagenet(root: str | Path) -> str:
    return (f"ImageNet cannot be downloaded automatically: get ILSVRC-2012 from image-net.org and extract it "
            f"as {Path(root) / 'train'}/<wnid>/*.JPEG and {Path(root) / 'val'}/<wnid>/*.JPEG, or generate the "
            f"small synthetic stand-in with `dla-repro data synthetic --dataset imagenet --root {root}`")


def imagenet_transforms(train: bool, crop_size: int = 224) -> Callable:
    """train: RandomResizedCrop(224) + RandomHorizontalFlip; val: Resize(256) + CenterCrop(224); both
    then ToTensor and Normalize with the ImageNet mean/std. ``crop_size`` scales both (tests use small
    images; the recipe's 224 is the default)."""
    from torchvision import transforms as T

    resize = round(crop_size * 256 / 224)
    steps = ([T.RandomResizedCrop(crop_size), T.RandomHorizontalFlip()] if train
             else [T.Resize(resize), T.CenterCrop(crop_size)])
    return T.Compose([*steps, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class SeededImageFolder(ImageFolder):
    """An ImageFolder whose random transforms are a function of (seed, epoch, index).

    With ``seeded=False`` (validation: deterministic transforms) it is a plain ImageFolder.
    """

    def __init__(self, root: str | Path, transform: Callable, seed: int = 0, seeded: bool = True):
        super().__init__(str(root), transform=transform, loader=load_image)
        self.seed = int(seed)
        self.epoch = 0
        self.seeded = seeded

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation of ``epoch`` (call before creating the epoch's DataLoader)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if not self.seeded:
            return super().__getitem__(index)
        with torch.random.fork_rng(devices=[]):  # restores the caller's CPU RNG afterwards
            torch.default_generator.manual_seed(sample_seed(self.seed, self.epoch, index))
            return super().__getitem__(index)


def _require_split(root: Path, split: str) -> Path:
    """``root/split``, or a DatasetNotFoundError naming the missing or empty path."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"ImageNet not found: missing folder {root}; {how_to_get_imagenet(root)}", root)
    folder = root / split
    if not folder.is_dir():
        raise DatasetNotFoundError(f"ImageNet incomplete: missing folder {folder}; {how_to_get_imagenet(root)}",
                                   folder)
    if not any(p.is_dir() for p in folder.iterdir()):
        raise DatasetNotFoundError(f"ImageNet incomplete: {folder} is empty (expected one folder of images per "
                                   f"class); {how_to_get_imagenet(root)}", folder)
    return folder


def load_image(path: str):
    """torchvision's PIL loader, with the file named when it cannot be decoded (a truncated JPEG
    would otherwise fail inside a loader worker without its path)."""
    from PIL import Image

    try:
        with open(path, "rb") as fh, Image.open(fh) as img:
            return img.convert("RGB")
    except OSError as err:
        raise CorruptDatasetError(f"{path}: cannot be decoded as an image ({err})", path) from None


def _image_folder(folder: Path, train: bool, seed: int, crop_size: int = 224) -> SeededImageFolder:
    try:
        return SeededImageFolder(folder, imagenet_transforms(train, crop_size), seed=seed, seeded=train)
    except FileNotFoundError as err:  # ImageFolder: no class folders, or a class without images
        raise DatasetNotFoundError(f"ImageNet incomplete: {folder}: {err}; {how_to_get_imagenet(folder.parent)}",
                                   folder) from err


def imagenet_datasets(root: str | Path, seed: int = 0,
                      crop_size: int = 224) -> tuple[SeededImageFolder, SeededImageFolder]:
    """(train, val) ImageFolders under ``root`` with the recipe transforms.

    Checks that both splits exist, hold images, and have the same classes (a mismatch would make
    validation labels mean different classes than training labels).
    """
    root = Path(root)
    train_dir, val_dir = (_require_split(root, split) for split in SPLITS)
    train = _image_folder(train_dir, True, seed, crop_size)
    val = _image_folder(val_dir, False, seed, crop_size)
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))[:5]
        only_val = sorted(set(val.classes) - set(train.classes))[:5]
        raise CorruptDatasetError(f"{root}: train has {len(train.classes)} classes and val {len(val.classes)}; "
                                  f"they must match (only in train: {only_train}, only in val: {only_val})", root)
    return train, val


def is_synthetic(root: str | Path) -> bool:
    """True if ``root`` holds the SYNTHETIC marker of the generated ImageNet stand-in."""
    return (Path(root) / MARKER).is_file()


def synthetic_info(root: str | Path) -> dict[str, str] | None:
    """The fields of ``root/SYNTHETIC`` (seed, sizes, ...), or None for real data."""
    return read_marker(root)
