"""A profile's data: generated in the real on-disk formats (synthetic profiles) or checked and,
where the licence allows, downloaded (real profiles).

CIFAR downloads with torchvision's URLs; ImageNet and COCO must be placed by the user (the
error names the folder and the layout). A folder that already holds generated data with the same
sizes is kept as it is, so Snakemake and DVC see unchanged files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from . import grid as gridlib
from . import layout

CIFAR_SIZE = {"n_train": 500, "n_test": 200}
IMAGENET_SIZE = {"n_classes": 4, "n_train_per_class": 8, "n_val_per_class": 4, "size": 64}
COCO_SIZE = {"n_train": 8, "n_val": 4, "image_size": 128}


class DataNotAvailable(RuntimeError):
    """Real data that this command cannot fetch is missing; the message says where to put it."""


def _same(info: Mapping[str, str] | None, size: Mapping[str, Any]) -> bool:
    return bool(info) and all(info.get(k) == str(v) for k, v in size.items())


def prepare_dataset(dataset: str, profile: Mapping[str, Any], root: Path) -> None:
    """Generate (synthetic) or check/download (real) one dataset below ``root`` (data/<profile>)."""
    from . import data

    synthetic = profile["data"] == "synthetic"
    if dataset in gridlib.CIFAR:
        size = {**CIFAR_SIZE, **(profile.get("synthetic_size") or {})}
        if not synthetic:
            try:
                data.cifar_classes(root, dataset)
            except data.DatasetNotFoundError:
                data.download_cifar(root, dataset)
        elif not (data.dataset_dir(root, dataset).exists() and _same(data.synthetic_info(root, dataset), size)):
            data.write_synthetic_cifar(root, dataset, **size)
    elif dataset == "imagenet":
        folder = root / "imagenet"
        size = {**IMAGENET_SIZE, **(gridlib.family_settings(profile, "imagenet").get("synthetic_size") or {})}
        if not synthetic:
            if not (folder / "train").is_dir() or not (folder / "val").is_dir():
                from .data.imagenet import how_to_get_imagenet

                raise DataNotAvailable(how_to_get_imagenet(folder))
        elif not (folder.exists() and _same(data.imagenet_synthetic_info(folder), size)):
            data.write_synthetic_imagefolder(folder, **size)
    elif dataset == "coco":
        size = {**COCO_SIZE, **(gridlib.family_settings(profile, "coco").get("synthetic_size") or {})}
        if not synthetic:
            if not (root / layout.DATASET_MARKERS["coco"]).is_file():
                from .data.coco import how_to_get_coco

                raise DataNotAvailable(f"COCO 2017 is not downloaded automatically: {how_to_get_coco(root)}")
        else:
            from .data import coco

            if not _same(coco.synthetic_coco_info(root), size):
                coco.write_synthetic_coco(root, **size)
    else:
        raise ValueError(f"unknown dataset {dataset!r}")


def prepare_data(grid: Mapping[str, Any], profile: str | None = None, workdir: str | Path = ".",
                 datasets: list[str] | None = None) -> Path:
    """Prepare every dataset the profile's runs need (or only ``datasets``) and write each one's
    stamp (:func:`dlarepro.layout.data_stamp`: fingerprint and source); returns data/<profile>."""
    from . import atomic, provenance

    name, prof = gridlib.profile_of(grid, profile)
    root = Path(workdir) / layout.data_root(name)
    needed = gridlib.datasets_of(grid, name)
    for dataset in datasets or needed:
        if dataset not in needed:
            raise gridlib.GridError(f"dataset {dataset!r} is not used by the {name!r} profile (it uses {needed})")
        prepare_dataset(dataset, prof, root)
        data_root = Path(workdir) / layout.dataset_root(name, dataset)
        stamp = Path(workdir) / layout.data_stamp(name, dataset)
        text = json.dumps(provenance.describe(dataset, data_root), indent=2, sort_keys=True) + "\n"
        if not stamp.is_file() or stamp.read_text() != text:  # unchanged data: unchanged stamp (and mtime)
            atomic.write_text(stamp, text)
    return root
