"""The data layer: CIFAR-10/100 and ImageNet from their real on-disk formats, synthetic stand-ins in
the same formats (flagged by a ``SYNTHETIC`` marker), and resumable, worker-independent augmentation.

Every failure is a :class:`DatasetError` whose message names the path and what to do about it.
"""

import importlib

# Every name is loaded on first use: the modules import torch (and ImageNet's torchvision), which
# a command that only builds the CLI parser, or a CIFAR run, should not pay for once per job.
_CIFAR = ("CIFAR_DATASETS", "CIFAR_MEAN", "CIFAR_STD", "CifarDataset", "cifar_classes", "cifar_transforms",
          "dataset_dir", "download_cifar", "is_synthetic", "load_cifar", "official_checksums_match", "synthetic_info")
_COMMON = ("MARKER", "CorruptDatasetError", "DatasetDownloadError", "DatasetError", "DatasetNotFoundError",
           "read_marker", "sample_seed")
_SOURCES: dict[str, tuple[str, str]] = {
    **{name: ("cifar", name) for name in _CIFAR},
    **{name: ("common", name) for name in _COMMON},
    "write_synthetic_cifar": ("synthetic", "write_synthetic_cifar"),
    "write_synthetic_imagefolder": ("synthetic", "write_synthetic_imagefolder"),
    "IMAGENET_MEAN": ("imagenet", "IMAGENET_MEAN"), "IMAGENET_STD": ("imagenet", "IMAGENET_STD"),
    "SeededImageFolder": ("imagenet", "SeededImageFolder"), "imagenet_datasets": ("imagenet", "imagenet_datasets"),
    "imagenet_transforms": ("imagenet", "imagenet_transforms"),
    "imagenet_is_synthetic": ("imagenet", "is_synthetic"), "imagenet_synthetic_info": ("imagenet", "synthetic_info"),
}
__all__ = list(_SOURCES)


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _SOURCES[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
