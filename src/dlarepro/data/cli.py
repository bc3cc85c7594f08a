"""``dla-repro data``: generate the synthetic stand-ins, download CIFAR, check a dataset folder.

``register(subparsers)`` adds the command to the main parser. Failures print one line on stderr
(``dla-repro data ACTION: error: ...``, naming the path) and exit with status 1, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# Names only: the parser is built for every `dla-repro` command (one per Snakemake job), and the
# data modules import torch, so they are imported by the actions that need them.
CIFAR_DATASETS = ("cifar10", "cifar100")
ALL_DATASETS = (*CIFAR_DATASETS, "imagenet", "coco")
ROOT_HELP = ("for CIFAR the folder that holds cifar-10-batches-py/ or cifar-100-python/ (torchvision's "
             "root); for ImageNet the folder that holds train/ and val/; for COCO the folder that holds coco/")


def _fail(action: str, message: str) -> int:
    print(f"dla-repro data {action}: error: {message}", file=sys.stderr)
    return 1


def cmd_synthetic(args: argparse.Namespace) -> int:
    from .synthetic import write_synthetic_cifar, write_synthetic_imagefolder

    try:
        if args.dataset == "imagenet":
            kwargs = {"seed": args.seed}
            for key, value in (("n_train_per_class", args.n_train), ("n_val_per_class", args.n_test),
                               ("n_classes", args.n_classes), ("size", args.size)):
                if value is not None:
                    kwargs[key] = value
            where = write_synthetic_imagefolder(args.root, **kwargs)
        elif args.dataset == "coco":
            from .coco import write_synthetic_coco

            kwargs = {k: v for k, v in (("n_train", args.n_train), ("n_val", args.n_test), ("image_size", args.size))
                      if v is not None}
            where = write_synthetic_coco(args.root, seed=args.seed, **kwargs)
        else:
            kwargs = {k: v for k, v in (("n_train", args.n_train), ("n_test", args.n_test)) if v is not None}
            where = write_synthetic_cifar(args.root, args.dataset, seed=args.seed, **kwargs)
    except (ValueError, OSError) as err:  # bad sizes, or a folder with real data in the way
        return _fail("synthetic", str(err))
    print(f"wrote synthetic {args.dataset} (seed {args.seed}) to {where}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .cifar import download_cifar
    from .common import DatasetError

    try:
        where = download_cifar(args.root, args.dataset)
    except DatasetError as err:
        return _fail("download", str(err))
    print(f"downloaded {args.dataset} to {where}")
    return 0


def _cifar_summary(root: str, dataset: str) -> dict[str, Any]:
    import numpy as np

    from .cifar import cifar_classes, dataset_dir, load_cifar, official_checksums_match, synthetic_info

    classes = cifar_classes(root, dataset)
    splits = {}
    for split, train in (("train", True), ("test", False)):
        images, labels = load_cifar(root, dataset, train)
        splits[split] = {"images": len(labels), "classes_present": int(np.unique(labels).size),
                         "shape": list(images.shape[1:])}
    marker = synthetic_info(root, dataset)
    return {"dataset": dataset, "folder": str(dataset_dir(root, dataset)), "classes": len(classes),
            "splits": splits, "synthetic": marker is not None, "marker": marker,
            "official_md5": official_checksums_match(root, dataset)}


def _to_decode(n: int, every: bool) -> range:
    """Which images a check decodes: all of a small set (or with --all-images), else a spread of 100."""
    return range(n) if every or n <= 1000 else range(0, n, n // 100)


def _imagenet_summary(root: str, every: bool = False) -> dict[str, Any]:
    from .imagenet import decode_rgb, imagenet_datasets, synthetic_info

    train, val = imagenet_datasets(root)
    for ds in (train, val):  # every file decodes, as training will need it (a truncated JPEG is named)
        for index in _to_decode(len(ds), every):
            decode_rgb(ds.samples[index][0])
    splits = {name: {"images": len(ds), "classes_present": len({t for _, t in ds.samples})}
              for name, ds in (("train", train), ("val", val))}
    marker = synthetic_info(root)
    return {"dataset": "imagenet", "folder": str(Path(root)), "classes": len(train.classes), "splits": splits,
            "synthetic": marker is not None, "marker": marker}


def _coco_summary(root: str, every: bool = False) -> dict[str, Any]:
    from .coco import CocoDetection, coco_dir, synthetic_coco_info

    splits = {}
    for split in ("train", "val"):
        data = CocoDetection(root, split, train=False)
        # every image decodes, as training will need it (a spread of 100 on the real 118k)
        for index in _to_decode(len(data), every):
            data[index]
        splits[split] = {"images": len(data), "objects": len(data.coco.anns)}
    marker = synthetic_coco_info(root)
    return {"dataset": "coco", "folder": str(coco_dir(root)), "classes": len(data.category_ids), "splits": splits,
            "synthetic": marker is not None, "marker": marker}


def _print_summary(s: dict[str, Any]) -> None:
    if s["synthetic"]:
        seed = (s["marker"] or {}).get("seed", "?")
        kind = f"SYNTHETIC stand-in (seed {seed}); not the real dataset"
    elif s.get("official_md5"):
        kind = "real data (md5 sums match the official release)"
    elif "official_md5" in s:
        kind = "no SYNTHETIC marker, but the md5 sums differ from the official release"
    else:
        kind = "no SYNTHETIC marker (real data)"
    print(f"{s['dataset']} at {s['folder']}: {kind}")
    print(f"  classes: {s['classes']}")
    for name, split in s["splits"].items():
        what = f"{split['objects']} objects" if "objects" in split else f"{split['classes_present']} classes present"
        print(f"  {name}: {split['images']} images, {what}")


def cmd_check(args: argparse.Namespace) -> int:
    from .common import DatasetError

    try:
        if args.dataset in CIFAR_DATASETS:
            summary = _cifar_summary(args.root, args.dataset)
        else:
            summary = {"imagenet": _imagenet_summary, "coco": _coco_summary}[args.dataset](args.root, args.all_images)
    except DatasetError as err:
        return _fail("check", str(err))
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        _print_summary(summary)
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``data`` and its actions (synthetic, download, check) to an argparse subparsers object."""
    data = subparsers.add_parser(
        "data", help="get, generate or check datasets (CIFAR-10/100, ImageNet, COCO 2017)",
        description="Datasets in their real on-disk formats. Without internet, `data synthetic` writes a small "
                    "stand-in in the same format, marked by a SYNTHETIC file that every result inherits.",
    )
    actions = data.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True

    synthetic = actions.add_parser(
        "synthetic", help="write a small synthetic stand-in in the real format",
        description="Write a deterministic synthetic dataset (class-dependent colours and patterns plus noise, "
                    "learnable in a few epochs) in exactly the layout of the real one, with a SYNTHETIC marker. "
                    "Replaces an earlier stand-in; never overwrites a folder without the marker.",
    )
    synthetic.add_argument("--dataset", required=True, choices=ALL_DATASETS)
    synthetic.add_argument("--root", required=True, metavar="DIR", help=ROOT_HELP)
    synthetic.add_argument("--n-train", type=int, metavar="N",
                           help="training images: in total for CIFAR (default 500), per class for ImageNet "
                                "(default 8), in total for COCO (default 8)")
    synthetic.add_argument("--n-test", type=int, metavar="N",
                           help="test images: in total for CIFAR (default 200), val images per class for "
                                "ImageNet (default 4), val images for COCO (default 4)")
    synthetic.add_argument("--n-classes", type=int, metavar="N", help="ImageNet only: number of classes (default 4)")
    synthetic.add_argument("--size", type=int, metavar="PX", help="ImageNet and COCO: image side in pixels (default 64; COCO 128)")
    synthetic.add_argument("--seed", type=int, default=0, metavar="S", help="generator seed (default 0)")
    synthetic.set_defaults(func=cmd_synthetic)

    download = actions.add_parser(
        "download", help="download real CIFAR with torchvision (needs internet)",
        description="Download CIFAR-10 or CIFAR-100 into DIR with torchvision (which verifies the md5 sums), "
                    "then check it. On a machine without internet, run this elsewhere and copy the folder.",
    )
    download.add_argument("--dataset", required=True, choices=CIFAR_DATASETS)
    download.add_argument("--root", required=True, metavar="DIR", help=ROOT_HELP)
    download.set_defaults(func=cmd_download)

    check = actions.add_parser(
        "check", help="load a dataset and print its counts, classes and synthetic flag",
        description="Load every file of the dataset with the same reader training uses (decoding the images, "
                    "see --all-images) and print the image and class counts and whether it is synthetic. Exit "
                    "status 1, with the reason and the file, if anything is missing or corrupt.",
    )
    check.add_argument("--dataset", required=True, choices=ALL_DATASETS)
    check.add_argument("--root", required=True, metavar="DIR", help=ROOT_HELP)
    check.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    check.add_argument("--all-images", action="store_true",
                       help="ImageNet and COCO: decode every image (default: all of a set of up to 1000 images, "
                            "else a spread of 100; the full ImageNet takes hours)")
    check.set_defaults(func=cmd_check)
    return data
