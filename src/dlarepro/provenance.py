"""Which data a run used: a fingerprint of the dataset's files and where the data comes from.

The fingerprint goes into every checkpoint and into ``metrics.json``: a checkpoint made on other
data is never resumed, and a finished run whose data changed since is stale (:mod:`dlarepro.freshness`).
``source`` says what the numbers may be compared with:

* ``official`` — CIFAR whose md5 sums equal the official release's (torchvision's list);
* ``modified`` — CIFAR without the SYNTHETIC marker whose md5 sums differ from the release: real
  looking data that is not the paper's, so its numbers must not be set against the published ones;
* ``synthetic`` — a generated stand-in (SYNTHETIC marker);
* ``unverified`` — ImageNet or COCO placed by hand: no official checksums to compare with.

Torch-free (``dla-repro submit`` checks fingerprints once per run); only the official CIFAR md5
list comes from torchvision, and only when asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from . import layout

MARKER = "SYNTHETIC"  # the same name as dlarepro.data.common.MARKER (kept torch-free here)
#: files hashed by content (small next to the images, and what a regeneration rewrites)
_CHUNK = 1 << 20


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _listing(folder: Path) -> Iterable[tuple[str, int]]:
    """(relative path, size) of every file below ``folder``, sorted; images are listed, not read."""
    out = []
    for top, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            path = Path(top) / name
            out.append((str(path.relative_to(folder)), path.stat().st_size))
    return sorted(out)


def dataset_folder(dataset: str, data_root: str | Path) -> Path:
    """The folder whose files make up ``dataset`` under a run's ``data_root``."""
    root = Path(data_root)
    if dataset == "imagenet":
        return root
    if dataset == "coco":
        return root / "coco"
    return root / Path(layout.DATASET_MARKERS[dataset]).parent


def file_digests(dataset: str, data_root: str | Path) -> dict[str, Any]:
    """What the fingerprint is made of: content md5 of the small files, (path, size) of images."""
    folder = dataset_folder(dataset, data_root)
    if not folder.is_dir():
        return {}
    if dataset in ("cifar10", "cifar100"):
        return {p.name: _md5(p) for p in sorted(folder.iterdir()) if p.is_file()}
    parts: dict[str, Any] = {}
    if (folder / MARKER).is_file():
        parts[MARKER] = _md5(folder / MARKER)
    if dataset == "coco":
        for path in sorted((folder / "annotations").glob("*.json")):
            parts[f"annotations/{path.name}"] = _md5(path)
        splits = ("train2017", "val2017")
    else:
        splits = ("train", "val")
    for split in splits:
        if (folder / split).is_dir():
            parts[split] = hashlib.sha256(json.dumps(_listing(folder / split)).encode()).hexdigest()
    return parts


def fingerprint(dataset: str, data_root: str | Path) -> str | None:
    """16 hex digits that change whenever the dataset's files do (None if the folder is absent)."""
    parts = file_digests(dataset, data_root)
    if not parts:
        return None
    return hashlib.sha256(json.dumps([dataset, parts], sort_keys=True).encode()).hexdigest()[:16]


def official_cifar_md5(dataset: str) -> dict[str, str]:
    """The md5 sums of the official CIFAR release, file by file (torchvision's list)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    source = CIFAR10 if dataset == "cifar10" else CIFAR100
    return {name: md5 for name, md5 in [*source.train_list, *source.test_list,
                                        [source.meta["filename"], source.meta["md5"]]]}


def describe(dataset: str, data_root: str | Path) -> dict[str, Any]:
    """``metrics.json``'s ``data`` entry: dataset, folder, fingerprint, source and a sentence."""
    folder = dataset_folder(dataset, data_root)
    parts = file_digests(dataset, data_root)
    out: dict[str, Any] = {"dataset": dataset, "folder": str(folder), "fingerprint": fingerprint(dataset, data_root)}
    if MARKER in parts:
        out.update(source="synthetic", detail="generated stand-in (SYNTHETIC marker): not the real dataset")
    elif dataset in ("cifar10", "cifar100"):
        official = official_cifar_md5(dataset)
        differ = sorted(name for name, md5 in official.items() if parts.get(name) != md5)
        if differ:
            out.update(source="modified", detail=f"no SYNTHETIC marker, but the md5 sums of {', '.join(differ)} "
                                                 f"differ from the official release: not the paper's data")
        else:
            out.update(source="official", detail="md5 sums equal the official release")
    else:
        out.update(source="unverified", detail="placed by hand; no official checksums to compare with")
    return out


def comparable_with_paper(data: dict[str, Any] | None) -> bool:
    """May a run's numbers be set against the published ones? Only on the official (CIFAR) or
    hand-placed real (ImageNet, COCO) data; never on synthetic or modified data, nor when unknown."""
    return bool(data) and data.get("source") in ("official", "unverified")
