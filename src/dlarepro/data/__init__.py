"""The data layer: CIFAR-10/100 and ImageNet from their real on-disk formats, synthetic stand-ins in
the same formats (flagged by a ``SYNTHETIC`` marker), and resumable, worker-independent augmentation.

Every failure is a :class:`DatasetError` whose message names the path and what to do about it.
"""

from .cifar import (
    CIFAR_DATASETS,
    CIFAR_MEAN,
    CIFAR_STD,
    MARKER,
    CifarDataset,
    CorruptDatasetError,
    DatasetDownloadError,
    DatasetError,
    DatasetNotFoundError,
    cifar_classes,
    cifar_transforms,
    dataset_dir,
    download_cifar,
    is_synthetic,
    load_cifar,
    official_checksums_match,
    read_marker,
    sample_seed,
    synthetic_info,
)
from .imagenet import IMAGENET_MEAN, IMAGENET_STD, SeededImageFolder, imagenet_datasets, imagenet_transforms
from .imagenet import is_synthetic as imagenet_is_synthetic
from .imagenet import synthetic_info as imagenet_synthetic_info
from .synthetic import write_synthetic_cifar, write_synthetic_imagefolder

__all__ = [
    "CIFAR_DATASETS", "CIFAR_MEAN", "CIFAR_STD", "IMAGENET_MEAN", "IMAGENET_STD", "MARKER",
    "CifarDataset", "SeededImageFolder",
    "DatasetError", "DatasetNotFoundError", "CorruptDatasetError", "DatasetDownloadError",
    "load_cifar", "cifar_classes", "cifar_transforms", "dataset_dir", "download_cifar", "is_synthetic",
    "synthetic_info", "official_checksums_match", "read_marker", "sample_seed",
    "imagenet_datasets", "imagenet_transforms", "imagenet_is_synthetic", "imagenet_synthetic_info",
    "write_synthetic_cifar", "write_synthetic_imagefolder",
]
