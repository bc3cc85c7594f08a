"""ImageNet (ILSVRC-2012) as torchvision ImageFolders with the paper's recipe transforms.

Layout: ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG`` (val reorganised into class
folders). ImageNet cannot be downloaded automatically; :func:`dlarepro.data.synthetic.write_synthetic_imagefolder`
writes a tiny stand-in in the same layout, marked by ``root/SYNTHETIC``.

Training augmentation is torchvision's recipe with its random numbers drawn from a generator seeded
per sample from (seed, epoch, index), so it is resumable and independent of worker count, like
:class:`~dlarepro.data.cifar.CifarDataset`; the global RNG is never touched.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torchvision.datasets import ImageFolder

from .common import MARKER, CorruptDatasetError, DatasetNotFoundError, read_marker, sample_seed, split_key

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

    An item is asked for by index (the epoch set by :meth:`set_epoch`) or by an ``(epoch, index)``
    key (what :class:`dlarepro.data.loading.EpochBatches` yields, so persistent DataLoader workers
    need no epoch update). :meth:`load_uint8` is the fast path: JPEG decoded by
    ``torchvision.io.decode_jpeg`` (the same pixels as PIL's decoder, measured faster: README,
    loader table), the crop and resize of the recipe on the PIL image, the random crop and flip
    drawn from a per-sample generator in the order torchvision draws them, and the image returned
    as uint8 so that the float conversion and normalisation run batched on the training device.
    ``__getitem__`` adds that normalisation per image and equals the torchvision transforms
    (``transform``) under ``torch.manual_seed(sample_seed(seed, epoch, index))``, bit for bit.

    With ``seeded=False`` (validation: deterministic transforms) no random number is drawn.
    """

    normalisation = (IMAGENET_MEAN, IMAGENET_STD)

    def __init__(self, root: str | Path, transform: Callable, seed: int = 0, seeded: bool = True,
                 crop_size: int = 224):
        super().__init__(str(root), transform=transform, loader=decode_rgb)
        self.seed = int(seed)
        self.epoch = 0
        self.seeded = seeded
        self.crop_size = crop_size

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation of ``epoch`` for items asked for by index alone."""
        self.epoch = int(epoch)

    def load_uint8(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """(uint8 [3, crop, crop] image, label) of ``key`` (an index, or ``(epoch, index)``)."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        epoch, index = split_key(key, self.epoch)
        path, label = self.samples[index]
        image = decode_rgb(path)
        size = [self.crop_size, self.crop_size]
        if self.seeded:
            g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
            top, left, height, width = random_resized_crop_params(image.height, image.width, g)
            image = TF.resized_crop(image, top, left, height, width, size, InterpolationMode.BILINEAR, antialias=True)
            if torch.rand(1, generator=g) < 0.5:
                image = TF.hflip(image)
        else:
            image = TF.center_crop(TF.resize(image, round(self.crop_size * 256 / 224),
                                             InterpolationMode.BILINEAR, antialias=True), size)
        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous(), label

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, Any]:
        from .cifar_batches import normaliser

        image, label = self.load_uint8(key)
        return normaliser(IMAGENET_MEAN, IMAGENET_STD, "cpu")(image[None])[0], label


def decode_rgb(path: str | Path):
    """An RGB PIL image of the file at ``path``: libjpeg-turbo through ``torchvision.io.decode_jpeg``
    (faster than PIL's own decoder, same pixels), PIL for anything that is not a JPEG (ImageNet has
    a few PNG and CMYK files under .JPEG names)."""
    from PIL import Image

    data = Path(path).read_bytes()
    decode_jpeg = _torchvision_decoder()
    if decode_jpeg is not None and data[:2] == b"\xff\xd8":  # the JPEG start-of-image marker
        try:
            array = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            return Image.fromarray(array.permute(1, 2, 0).numpy())
        except RuntimeError:  # a JPEG libjpeg-turbo refuses (e.g. unusual CMYK): PIL's decoder decides
            pass
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except OSError as err:
        raise CorruptDatasetError(f"{path}: cannot be read as an image ({err})", path) from None


def _torchvision_decoder():
    """``decode_jpeg`` to RGB, or None where torchvision no longer ships it (0.29 deprecates its image
    decoders in favour of torchcodec; PIL, which gives the same pixels, then decodes)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*image decoding.*")
        try:
            from torchvision.io import ImageReadMode, decode_jpeg
        except ImportError:
            return None

    def decode(data: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # torchvision warns at every call (a few microseconds to hush)
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*image decoding.*")
            return decode_jpeg(data, mode=ImageReadMode.RGB)

    return decode


def random_resized_crop_params(height: int, width: int, g: torch.Generator, scale=(0.08, 1.0),
                               ratio=(3.0 / 4.0, 4.0 / 3.0)) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` drawing from ``g`` instead of the global RNG:
    the same draws in the same order, so the same (top, left, height, width)."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=g).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g)).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=g).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=g).item())
            return top, left, h, w
    in_ratio = float(width) / float(height)  # fallback: the central crop, as torchvision's
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


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


def _image_folder(folder: Path, train: bool, seed: int, crop_size: int = 224) -> SeededImageFolder:
    try:
        return SeededImageFolder(folder, imagenet_transforms(train, crop_size), seed=seed, seeded=train,
                                 crop_size=crop_size)
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
