"""COCO 2017 detection data in its real on-disk layout, and a tiny generated stand-in in the same one.

Layout under ``root`` (the data folder of a profile)::

    coco/train2017/*.jpg   coco/val2017/*.jpg
    coco/annotations/instances_train2017.json   coco/annotations/instances_val2017.json

Targets are what torchvision's detection models take: ``boxes`` (x1, y1, x2, y2), ``labels``
(1..K, contiguous over the sorted COCO category ids) and, for Mask R-CNN, ``masks`` (N x H x W).
Training images are flipped horizontally with probability 1/2, decided by (seed, epoch, index)
alone, so a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .common import MARKER, CorruptDatasetError, DatasetNotFoundError, read_marker, sample_seed, split_key

SPLITS = ("train", "val")
#: the generated stand-in's categories, with COCO-like non-contiguous ids
SYNTHETIC_CATEGORIES = ({"id": 1, "name": "square"}, {"id": 3, "name": "disc"}, {"id": 7, "name": "triangle"})


def coco_dir(root: str | Path) -> Path:
    return Path(root) / "coco"


def annotation_file(root: str | Path, split: str) -> Path:
    return coco_dir(root) / "annotations" / f"instances_{split}2017.json"


def how_to_get_coco(root: str | Path) -> str:
    folder = coco_dir(root)
    return (f"place COCO 2017 (train2017/, val2017/, annotations/instances_{{train,val}}2017.json from "
            f"cocodataset.org) in {folder}, or generate the tiny synthetic stand-in with "
            f"`dla-repro data synthetic --dataset coco --root {root}`")


def coco_is_synthetic(root: str | Path) -> bool:
    return (coco_dir(root) / MARKER).is_file()


def synthetic_coco_info(root: str | Path) -> dict[str, str] | None:
    """The fields of ``coco/SYNTHETIC`` (seed, sizes, ...), or None for real (or absent) data."""
    return read_marker(coco_dir(root)) if coco_dir(root).is_dir() else None


# --------------------------------------------------------------------------------------------
# the generated stand-in


def _shape(kind: str, cx: float, cy: float, r: float, rng: np.random.Generator) -> list[float]:
    """A polygon (x1, y1, x2, y2, ...) of a square, a disc (24-gon) or a triangle."""
    if kind == "square":
        angle = rng.uniform(0, np.pi / 2)
        corners = [angle + k * np.pi / 2 for k in range(4)]
    elif kind == "disc":
        corners = [k * 2 * np.pi / 24 for k in range(24)]
    else:
        angle = rng.uniform(0, 2 * np.pi)
        corners = [angle + k * 2 * np.pi / 3 for k in range(3)]
    points = []
    for a in corners:
        points += [round(float(cx + r * np.cos(a)), 2), round(float(cy + r * np.sin(a)), 2)]
    return points


def _image_and_annotations(image_id: int, size: int, rng: np.random.Generator, first_ann: int):
    from PIL import Image, ImageDraw
    from pycocotools import mask as mask_utils

    background = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    annotations = []
    # one object of each COCO size class where the image allows it (small < 32^2 <= medium < 96^2 <= large)
    radii = [rng.uniform(6, 9), rng.uniform(0.2, 0.3) * size, rng.uniform(0.38, 0.45) * size]
    for k, radius in enumerate(radii[: int(rng.integers(1, 4))]):
        category = SYNTHETIC_CATEGORIES[int(rng.integers(len(SYNTHETIC_CATEGORIES)))]
        cx, cy = (rng.uniform(radius, size - radius) for _ in range(2))
        polygon = _shape(category["name"], cx, cy, radius, rng)
        colour = tuple(int(c) for c in rng.integers(120, 256, size=3))
        draw.polygon(polygon, fill=colour)
        rle = mask_utils.merge(mask_utils.frPyObjects([polygon], size, size))
        x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
        annotations.append({"id": first_ann + k, "image_id": image_id, "category_id": category["id"],
                            "segmentation": [polygon], "area": float(mask_utils.area(rle)),
                            "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)], "iscrowd": 0})
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue(), annotations


def write_synthetic_coco(root: str | Path, n_train: int = 8, n_val: int = 4, image_size: int = 128,
                         seed: int = 0) -> Path:
    """Write a tiny COCO-format dataset (shapes on noise, boxes and polygons) below ``root/coco``.

    Atomic: the folder appears complete or not at all; real data (no SYNTHETIC marker) is never
    replaced. Returns the ``coco`` folder.
    """
    from .synthetic import write_file, atomic_folder, marker_text

    for name, value, minimum in (("n_train", n_train, 1), ("n_val", n_val, 1), ("image_size", image_size, 32)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    final = coco_dir(root)
    with atomic_folder(final) as tmp:
        (tmp / "annotations").mkdir()
        next_image, next_ann = 1, 1
        for split, count, stream in (("train", n_train, 1), ("val", n_val, 2)):
            rng = np.random.default_rng([seed, stream])
            (tmp / f"{split}2017").mkdir()
            images, annotations = [], []
            for _ in range(count):
                jpeg, anns = _image_and_annotations(next_image, image_size, rng, next_ann)
                name = f"{next_image:012d}.jpg"
                write_file(tmp / f"{split}2017" / name, jpeg)
                images.append({"id": next_image, "file_name": name, "width": image_size, "height": image_size})
                annotations += anns
                next_image, next_ann = next_image + 1, next_ann + len(anns)
            document = {"info": {"description": "SYNTHETIC stand-in for COCO 2017 generated by dlarepro; "
                                                "not the real dataset", "version": "1.0"},
                        "licenses": [], "images": images, "annotations": annotations,
                        "categories": [dict(c, supercategory="shape") for c in SYNTHETIC_CATEGORIES]}
            write_file(tmp / "annotations" / f"instances_{split}2017.json", json.dumps(document).encode())
        fields = {"dataset": "coco", "seed": seed, "n_train": n_train, "n_val": n_val, "image_size": image_size}
        write_file(tmp / MARKER, marker_text("COCO 2017", "write_synthetic_coco", fields).encode())
    return final


# --------------------------------------------------------------------------------------------
# the loader


def load_coco_api(root: str | Path, split: str):
    """pycocotools' COCO object of a split, or a clear error naming the missing or corrupt file."""
    from pycocotools.coco import COCO

    if split not in SPLITS:
        raise ValueError(f"unknown COCO split {split!r}; choose one of {SPLITS}")
    path = annotation_file(root, split)
    if not path.is_file():
        raise DatasetNotFoundError(f"COCO not found: missing {path}; {how_to_get_coco(root)}", path)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            api = COCO(str(path))
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptDatasetError(f"{path}: not a COCO instances file ({type(err).__name__}: {err})", path) from None
    if not api.getCatIds():
        raise CorruptDatasetError(f"{path}: no categories", path)
    known = set(api.getCatIds())
    stray = next((a for a in api.anns.values() if a.get("category_id") not in known), None)
    if stray is not None:  # found here, not as a KeyError in the middle of training
        raise CorruptDatasetError(f"{path}: annotation {stray.get('id')} (image {stray.get('image_id')}) has "
                                  f"category_id {stray.get('category_id')!r}, which is not among the file's "
                                  f"categories {sorted(known)}", path)
    return api


class CocoDetection(torch.utils.data.Dataset):
    """(image tensor in [0, 1], target) pairs of one split, as torchvision's detectors take them."""

    def __init__(self, root: str | Path, split: str, train: bool, seed: int = 0, masks: bool = False):
        self.root, self.split, self.train, self.seed, self.masks = Path(root), split, train, int(seed), masks
        self.coco = load_coco_api(root, split)
        self.images = coco_dir(root) / f"{split}2017"
        if not self.images.is_dir():
            raise DatasetNotFoundError(f"COCO incomplete: missing folder {self.images}; {how_to_get_coco(root)}",
                                       self.images)
        self.category_ids = sorted(self.coco.getCatIds())
        self.label_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        ids = sorted(self.coco.imgs)
        if train:  # images without a usable box teach nothing to the detector heads
            ids = [i for i in ids if self._annotations(i)]
        self.ids = ids
        self.epoch = 0

    @property
    def num_classes(self) -> int:
        """Categories plus the background class."""
        return len(self.category_ids) + 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.ids)

    def _annotations(self, image_id: int) -> list[dict[str, Any]]:
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id], iscrowd=False))
        return [a for a in anns if a["bbox"][2] > 1 and a["bbox"][3] > 1]

    def __getitem__(self, key: int | tuple[int, int]):
        from PIL import Image

        epoch, index = split_key(key, self.epoch)  # an index, or an (epoch, index) pair
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        path = self.images / info["file_name"]
        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        except OSError as err:
            raise CorruptDatasetError(f"{path}: cannot be read as an image ({err})", path) from None
        image = torch.from_numpy(array).permute(2, 0, 1).contiguous()
        anns = self._annotations(image_id)
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        target = {"boxes": boxes, "labels": torch.tensor([self.label_of[a["category_id"]] for a in anns],
                                                         dtype=torch.int64),
                  "image_id": image_id}
        if self.masks:
            masks = np.stack([self.coco.annToMask(a) for a in anns]) if anns else \
                np.zeros((0, info["height"], info["width"]), dtype=np.uint8)
            target["masks"] = torch.from_numpy(masks)
        if self.train and random.Random(sample_seed(self.seed, epoch, index)).random() < 0.5:
            image, target = _flip(image, target)
        return image, target


def _flip(image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    width = image.shape[-1]
    flipped = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    flipped["boxes"] = boxes
    if "masks" in target:
        flipped["masks"] = target["masks"].flip(-1)
    return image.flip(-1), flipped


def collate(batch):
    """Detection batches are lists: images differ in size."""
    return tuple(zip(*batch))
