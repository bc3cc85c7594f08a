"""CIFAR-10/100 read straight from the on-disk format that torchvision's download leaves.

Why not ``torchvision.datasets.CIFAR10``: it insists on the official md5 sums, so it rejects the
synthetic stand-in (:mod:`dlarepro.data.synthetic`) that this machine has to use, and it gives a
generic "not found or corrupted" error. Here every failure names the file and what is wrong.

Layout under ``root`` (the torchvision convention)::

    root/cifar-10-batches-py/  data_batch_1 .. data_batch_5, test_batch, batches.meta
    root/cifar-100-python/     train, test, meta

Each batch is a pickle (written by Python 2: load with ``encoding="latin1"`` or ``"bytes"``) of a dict
with ``data`` (N x 3072 uint8; the 1024 red, then green, then blue values of a 32x32 image, row-major)
and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100). A file ``SYNTHETIC`` in the dataset folder
marks generated data; every downstream artifact carries that flag.

Augmentation (:class:`CifarDataset`) is a pure function of (seed, epoch, index), so a run resumed in the
middle of an epoch, with any number of DataLoader workers, sees bit-identical batches.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .common import (MARKER, CorruptDatasetError, DatasetDownloadError, DatasetNotFoundError,
                     read_marker, sample_seed, split_key)

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGE_SHAPE = (32, 32, 3)
PIXELS = 32 * 32 * 3
PAD = 4  # RandomCrop(32, padding=4)


# --------------------------------------------------------------------------------------------
# the format


@dataclass(frozen=True)
class CifarSpec:
    """Where one CIFAR variant lives and which keys its pickles use."""

    name: str
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    classes: int
    url: str

    def files(self, train: bool) -> tuple[str, ...]:
        return self.train_files if train else self.test_files


SPECS = {
    "cifar10": CifarSpec("cifar10", "CIFAR-10", "cifar-10-batches-py",
                         tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                         "batches.meta", "labels", "label_names", 10,
                         "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": CifarSpec("cifar100", "CIFAR-100", "cifar-100-python", ("train",), ("test",),
                          "meta", "fine_labels", "fine_label_names", 100,
                          "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
}
CIFAR_DATASETS = tuple(SPECS)


def cifar_spec(dataset: str) -> CifarSpec:
    """The spec of ``dataset``; a ValueError naming the bad name and the valid ones otherwise."""
    try:
        return SPECS[dataset]
    except KeyError:
        raise ValueError(f"unknown CIFAR dataset {dataset!r}: expected one of {', '.join(SPECS)}") from None


def dataset_dir(root: str | Path, dataset: str) -> Path:
    """The folder holding ``dataset``'s files under ``root`` (``root/cifar-10-batches-py`` etc.)."""
    return Path(root) / cifar_spec(dataset).folder


def how_to_get(dataset: str, root: str | Path) -> str:
    """The two ways to obtain the data, for error messages."""
    return (f"to get it, run on a machine with internet `dla-repro data download --dataset {dataset} "
            f"--root {root}` (uses torchvision) and copy the folder here, or generate the small synthetic "
            f"stand-in with `dla-repro data synthetic --dataset {dataset} --root {root}`")


# --------------------------------------------------------------------------------------------
# the SYNTHETIC marker


def is_synthetic(root: str | Path, dataset: str) -> bool:
    """True if ``dataset`` under ``root`` carries the SYNTHETIC marker of the generated stand-in."""
    return (dataset_dir(root, dataset) / MARKER).is_file()


def synthetic_info(root: str | Path, dataset: str) -> dict[str, str] | None:
    """The fields of the dataset's SYNTHETIC marker (seed, sizes, ...), or None for real data."""
    return read_marker(dataset_dir(root, dataset))


# --------------------------------------------------------------------------------------------
# reading the pickles


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The few globals a CIFAR pickle may name: numpy's array reconstruction, nothing else.

    Taken from numpy's own reduce output so that pickles written by numpy 1 (``numpy.core``), by
    numpy 2 (``numpy._core``) and by Python 3 with protocol 2 (``_codecs.encode``) all load.
    """
    import codecs

    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.uint8(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    table = {("_codecs", "encode"): codecs.encode}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric",
                   "numpy"):
        table.update({(module, "_reconstruct"): reconstruct, (module, "scalar"): scalar,
                      (module, "_frombuffer"): frombuffer, (module, "ndarray"): np.ndarray,
                      (module, "dtype"): np.dtype})
    return table


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that only builds dicts, lists, strings, numbers and numpy arrays.

    CIFAR files hold nothing else, and refusing other globals means a foreign or tampered file is
    reported as corrupt instead of running arbitrary code.
    """

    allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} (a CIFAR pickle holds only "
                                         f"dicts, lists and numpy arrays)") from None


def _text(value: Any) -> Any:
    """Python 2 strings come back as bytes under ``encoding='bytes'``: decode them like latin1 would."""
    return value.decode("latin1") if isinstance(value, bytes) else value


def load_pickle(path: Path) -> dict[str, Any]:
    """The dict in a CIFAR pickle, with str keys whichever way it was written.

    Missing file -> DatasetNotFoundError; unreadable or not a dict -> CorruptDatasetError.
    """
    if not path.is_file():
        raise DatasetNotFoundError(f"missing file {path}", path)
    try:
        with open(path, "rb") as fh:
            obj = _CifarUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, UnicodeDecodeError, MemoryError) as err:
        reason = "truncated (unexpected end of file)" if isinstance(err, EOFError) else f"{type(err).__name__}: {err}"
        raise CorruptDatasetError(f"{path}: not a readable CIFAR pickle: {reason}", path) from err
    if not isinstance(obj, dict):
        raise CorruptDatasetError(f"{path}: expected a pickled dict, found {type(obj).__name__}", path)
    return {_text(k): v for k, v in obj.items()}


def _batch_arrays(path: Path, spec: CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    """(data N x 3072 uint8, labels N int64) of one batch file, checked against the format."""
    entry = load_pickle(path)
    for key in ("data", spec.label_key):
        if key not in entry:
            raise CorruptDatasetError(f"{path}: no {key!r} entry (found keys: {', '.join(map(str, entry))})", path)
    data = entry["data"]
    if not isinstance(data, np.ndarray):
        raise CorruptDatasetError(f"{path}: 'data' is a {type(data).__name__}, expected a numpy array", path)
    if data.dtype != np.uint8:
        raise CorruptDatasetError(f"{path}: 'data' has dtype {data.dtype}, expected uint8", path)
    if data.ndim != 2 or data.shape[1] != PIXELS:
        raise CorruptDatasetError(f"{path}: 'data' has shape {data.shape}, expected (N, {PIXELS}) "
                                  f"(32x32 RGB images, channel-planar)", path)
    labels = _labels(entry[spec.label_key], path, spec)
    if len(labels) != len(data):
        raise CorruptDatasetError(f"{path}: {len(data)} images but {len(labels)} {spec.label_key!r}", path)
    return data, labels


def _labels(raw: Any, path: Path, spec: CifarSpec) -> np.ndarray:
    """The labels as int64, each in [0, classes)."""
    try:
        labels = np.asarray(raw)
    except (ValueError, TypeError) as err:
        raise CorruptDatasetError(f"{path}: {spec.label_key!r} is not a list of integers ({err})", path) from err
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise CorruptDatasetError(f"{path}: {spec.label_key!r} should be a flat list of integers, found "
                                  f"dtype {labels.dtype} and shape {labels.shape}", path)
    labels = labels.astype(np.int64)
    bad = (labels < 0) | (labels >= spec.classes)
    if bad.any():
        value = labels[bad][0]
        raise CorruptDatasetError(f"{path}: label {value} at position {int(np.argmax(bad))} is out of range "
                                  f"0..{spec.classes - 1} for {spec.title}", path)
    return labels


def _require_folder(root: str | Path, spec: CifarSpec) -> Path:
    folder = Path(root) / spec.folder
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{spec.title} not found: missing folder {folder}; "
                                   f"{how_to_get(spec.name, root)}", folder)
    return folder


def _require_file(folder: Path, name: str, root: str | Path, spec: CifarSpec) -> Path:
    path = folder / name
    if not path.is_file():
        raise DatasetNotFoundError(f"{spec.title} incomplete: missing file {path}; "
                                   f"{how_to_get(spec.name, root)}", path)
    return path


def cifar_classes(root: str | Path, dataset: str) -> list[str]:
    """The class names from the meta file; checks there are exactly 10 (CIFAR-10) or 100 (CIFAR-100).

    The count check catches a CIFAR-100 folder renamed to the CIFAR-10 one (or the reverse) before a
    model is built with the wrong number of outputs.
    """
    spec = cifar_spec(dataset)
    path = _require_file(_require_folder(root, spec), spec.meta_file, root, spec)
    meta = load_pickle(path)
    names = meta.get(spec.names_key)
    if not isinstance(names, (list, tuple)):
        raise CorruptDatasetError(f"{path}: no list {spec.names_key!r} of class names "
                                  f"(found keys: {', '.join(map(str, meta))})", path)
    if len(names) != spec.classes:
        raise CorruptDatasetError(f"{path}: {len(names)} class names, but {spec.title} has {spec.classes} "
                                  f"classes (is this the other CIFAR variant?)", path)
    return [str(_text(n)) for n in names]


def load_cifar(root: str | Path, dataset: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 32, 32, 3] HWC, labels int64 [N]) of the train or test split.

    Every file of the variant (both splits and the meta file) must be present, so that an incomplete
    copy fails at once rather than when the other split is first needed.
    """
    spec = cifar_spec(dataset)
    folder = _require_folder(root, spec)
    for name in spec.train_files + spec.test_files + (spec.meta_file,):
        _require_file(folder, name, root, spec)
    cifar_classes(root, dataset)
    parts = [_batch_arrays(folder / name, spec) for name in spec.files(train)]
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    if not len(labels):  # an empty split would end in a division by zero after the first epoch
        raise CorruptDatasetError(f"{folder}: the {'train' if train else 'test'} split "
                                  f"({', '.join(spec.files(train))}) holds no images", folder)
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def official_checksums_match(root: str | Path, dataset: str) -> bool:
    """True if every file has the md5 of the official release (as listed by torchvision).

    The SYNTHETIC marker can be deleted by hand; this is the independent evidence that data is real.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    source = CIFAR10 if dataset == "cifar10" else CIFAR100
    folder = dataset_dir(root, dataset)
    expected = [*source.train_list, *source.test_list, [source.meta["filename"], source.meta["md5"]]]
    for name, md5 in expected:
        path = folder / name
        if not path.is_file() or hashlib.md5(path.read_bytes()).hexdigest() != md5:
            return False
    return True


# --------------------------------------------------------------------------------------------
# download (needs internet)


def download_cifar(root: str | Path, dataset: str) -> Path:
    """Download ``dataset`` into ``root`` with torchvision and check it; returns the dataset folder.

    Refuses to touch a folder holding the synthetic stand-in: torchvision would overwrite the
    batches but leave the SYNTHETIC marker, and real data would then be reported as synthetic.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    spec = cifar_spec(dataset)
    folder = dataset_dir(root, dataset)
    if (folder / MARKER).exists():
        raise DatasetDownloadError(f"{folder} holds the synthetic stand-in ({folder / MARKER}); remove that "
                                   f"folder or pick another --root before downloading the real {spec.title}")
    source = CIFAR10 if dataset == "cifar10" else CIFAR100
    Path(root).mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            source(str(root), train=train, download=True)
    except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError
        raise DatasetDownloadError(
            f"could not download {spec.title} from {spec.url} into {root}: {type(err).__name__}: {err}. "
            f"This machine may have no internet access: download on one that has and copy {folder} here, "
            f"or use `dla-repro data synthetic --dataset {dataset} --root {root}` for a synthetic stand-in"
        ) from err
    load_cifar(root, dataset, train=True)
    return folder


# --------------------------------------------------------------------------------------------
# transforms and the dataset


def cifar_transforms(train: bool) -> Callable:
    """The official recipe as a torchvision pipeline on PIL images (the reference for CifarDataset).

    train: RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize; test: ToTensor,
    Normalize. It draws from torch's global RNG; CifarDataset does the same operations with a
    per-sample generator instead, and the tests check the two agree bit for bit.
    """
    from torchvision import transforms as T

    steps = [T.RandomCrop(32, padding=PAD), T.RandomHorizontalFlip()] if train else []
    return T.Compose([*steps, T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])


class CifarDataset(torch.utils.data.Dataset):
    """CIFAR images as (float32 [3, 32, 32] normalised tensor, int label) with the recipe's augmentation.

    With ``train=True`` sample ``i`` of epoch ``e`` is padded by 4, cropped at an offset and maybe
    flipped, all drawn from ``torch.Generator().manual_seed(sample_seed(seed, e, i))`` in the order
    torchvision's RandomCrop and RandomHorizontalFlip draw them. The result depends on nothing else:
    not on worker count, not on which samples came before, so resumed runs repeat it exactly. Call
    :meth:`set_epoch` before each epoch (before the DataLoader is created, so workers get a copy).

    ``transform``, if given, replaces all of this with a callable on a PIL image (e.g.
    :func:`cifar_transforms`); it uses the global RNG and so gives up the resume guarantee.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, train: bool, seed: int = 0,
                 transform: Callable | None = None):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
            raise ValueError(f"images must be uint8 [N, 32, 32, 3], got {images.dtype} {images.shape}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = np.asarray(labels, dtype=np.int64)
        self.train = train
        self.seed = int(seed)
        self.epoch = 0
        self.transform = transform
        self.mean = torch.tensor(CIFAR_MEAN, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(CIFAR_STD, dtype=torch.float32).view(3, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation of ``epoch`` (the train.py loop calls this every epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.labels)

    def augmentation(self, index: int, epoch: int | None = None) -> tuple[int, int, bool]:
        """(top, left, flip) of the crop of sample ``index`` in ``epoch`` (default: the current one)."""
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch if epoch is None else epoch, index))
        top = int(torch.randint(0, 2 * PAD + 1, (1,), generator=g).item())
        left = int(torch.randint(0, 2 * PAD + 1, (1,), generator=g).item())
        flip = bool(torch.rand(1, generator=g).item() < 0.5)
        return top, left, flip

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = split_key(key, self.epoch)  # an index, or an (epoch, index) pair
        label = int(self.labels[index])
        if self.transform is not None:
            from PIL import Image

            return self.transform(Image.fromarray(self.images[index].numpy())), label
        image = self.images[index].permute(2, 0, 1)  # uint8 CHW, like ToTensor before the division
        if self.train:
            top, left, flip = self.augmentation(index, epoch)
            padded = torch.nn.functional.pad(image, (PAD, PAD, PAD, PAD))  # zeros, like RandomCrop's fill
            image = padded[:, top:top + 32, left:left + 32]
            if flip:
                image = image.flip(-1)
        x = image.contiguous().to(torch.float32).div(255)
        return x.sub_(self.mean).div_(self.std), label
