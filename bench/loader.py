#!/usr/bin/env python
"""Images per second per CPU core of this project's input pipelines next to torchvision's standard ones.

Both sides run in this one process on one core (one torch thread, no worker processes: a worker
process is one core doing the same work), in interleaved rounds so that machine noise hits both
alike; medians are reported.

* CIFAR: torchvision's pipeline is CIFAR10's ``__getitem__`` (a PIL image) + RandomCrop(32, 4) +
  RandomHorizontalFlip + ToTensor + Normalize, batched by a DataLoader; ours is
  :class:`dlarepro.data.cifar_batches.CifarBatches` (the split as one uint8 tensor, one gather per
  batch, the same augmentation bit for bit) on the CPU. On a GPU it runs on the GPU and costs no core.
* ImageNet: torchvision's ImageFolder + RandomResizedCrop(224) + RandomHorizontalFlip + ToTensor +
  Normalize through a DataLoader; ours is the run's pipeline (:func:`dlarepro.data.loading.image_batches`:
  ``decode_jpeg``, the same crop on PIL, uint8 batches normalised batched, here on the CPU).

The images are synthetic (generated JPEGs of ``--image-size`` pixels, the project's ImageNet stand-in),
said so in the output. ``--json`` prints one JSON object (``cifar_ratio``, ``imagenet_ratio``, rates).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def rate(iterate, images: int) -> float:
    start = time.perf_counter()
    for _ in iterate():
        pass
    return images / (time.perf_counter() - start)


def interleaved(pipelines: dict, images: int, rounds: int) -> dict[str, float]:
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(rounds):
        for name, iterate in pipelines.items():
            rates[name].append(rate(iterate, images))
    return {name: statistics.median(values) for name, values in rates.items()}


def cifar(args) -> dict[str, float]:
    from dlarepro.data import CifarDataset, cifar_transforms
    from dlarepro.data.cifar_batches import CifarBatches

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (args.cifar_images, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, args.cifar_images)
    theirs = CifarDataset(images, labels, train=True, transform=cifar_transforms(train=True))  # PIL + torchvision
    ours = CifarBatches(CifarDataset(images, labels, train=True, seed=0), "cpu")
    order = [list(range(i, min(i + 128, len(labels)))) for i in range(0, len(labels), 128)]
    loader = torch.utils.data.DataLoader(theirs, batch_size=128, shuffle=True, num_workers=0)
    epoch = iter(range(10**6))
    return interleaved({"torchvision": lambda: loader, "ours": lambda: ours.epoch(next(epoch), order)},
                       len(labels), args.rounds)


def imagenet(args, folder: Path) -> dict[str, float]:
    from torchvision.datasets import ImageFolder

    from dlarepro.data import imagenet_datasets, imagenet_transforms, write_synthetic_imagefolder
    from dlarepro.data.loading import image_batches

    per_class = max(1, args.imagenet_images // 4)
    root = write_synthetic_imagefolder(folder / "imagenet", n_classes=4, n_train_per_class=per_class,
                                       n_val_per_class=1, size=args.image_size)
    theirs = ImageFolder(str(root / "train"), transform=imagenet_transforms(train=True))
    loader = torch.utils.data.DataLoader(theirs, batch_size=32, shuffle=True, num_workers=0)
    train_set, _ = imagenet_datasets(root)
    ours = image_batches(train_set, torch.device("cpu"), workers=0)
    index = list(range(len(train_set)))
    order = [index[i:i + 32] for i in range(0, len(index), 32)]
    epoch = iter(range(10**6))
    return interleaved({"torchvision": lambda: loader, "ours": lambda: ours.epoch(next(epoch), order)},
                       len(index), args.rounds)


def decoders(args, folder: Path) -> dict[str, float]:
    """Decoding alone: PIL against torchvision.io.decode_jpeg, on the same files."""
    from PIL import Image

    from dlarepro.data.imagenet import decode_rgb

    files = sorted((folder / "imagenet" / "train").rglob("*.JPEG"))
    pil = lambda: (Image.open(p).convert("RGB") for p in files)  # noqa: E731
    jpeg = lambda: (decode_rgb(p) for p in files)  # noqa: E731
    return interleaved({"PIL": pil, "decode_jpeg": jpeg}, len(files), args.rounds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    parser.add_argument("--cifar-images", type=int, default=5120)
    parser.add_argument("--imagenet-images", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=400, help="side of the synthetic JPEGs")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        c = cifar(args)
        i = imagenet(args, Path(tmp))
        d = decoders(args, Path(tmp))
    result = {"cifar_ratio": c["ours"] / c["torchvision"], "imagenet_ratio": i["ours"] / i["torchvision"],
              "cifar_ours_per_core": c["ours"], "cifar_torchvision_per_core": c["torchvision"],
              "imagenet_ours_per_core": i["ours"], "imagenet_torchvision_per_core": i["torchvision"],
              "decode_pil_per_core": d["PIL"], "decode_jpeg_per_core": d["decode_jpeg"],
              "image_size": args.image_size, "rounds": args.rounds, "synthetic": True, "torch": torch.__version__}
    if args.json:
        print(json.dumps(result))
        return 0
    from tabulate import tabulate

    print(f"Images/s per CPU core (1 thread, no workers), median of {args.rounds} interleaved rounds, synthetic "
          f"images (ImageNet: {args.image_size}x{args.image_size} JPEGs), torch {torch.__version__}")
    print(tabulate([["CIFAR (crop, flip, normalise)", f"{c['torchvision']:.0f}", f"{c['ours']:.0f}", f"{result['cifar_ratio']:.1f}", ">= 10"],
                    ["ImageNet (decode, RandomResizedCrop, flip, normalise)", f"{i['torchvision']:.0f}", f"{i['ours']:.0f}",
                     f"{result['imagenet_ratio']:.2f}", ">= 1"],
                    ["JPEG decoding alone (PIL / decode_jpeg)", f"{d['PIL']:.0f}", f"{d['decode_jpeg']:.0f}",
                     f"{d['decode_jpeg'] / d['PIL']:.2f}", ""]],
                   headers=["pipeline", "torchvision", "ours", "ratio", "target"], disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
