"""A detection run's configuration: a detection recipe plus run settings, validated as a whole.

Same conventions as every run (:mod:`dlarepro.runconfig`: flat mapping, ``recipe`` names a file in
``resources/recipes/detection`` or a path, ``key=value`` overrides, one error listing every
problem), with the keys of a COCO run: the detector, the ImageNet run its backbone starts from,
image sizes and an iteration-based warm-up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from ..runconfig import (COMMON_RUN_KEYS, Key, fill_model_knobs, is_int, is_number, knob_keys, packaged,
                         read_recipe, recipe_names as _names, resolve_keys)

DETECTORS = ("faster_rcnn", "mask_rcnn")

RECIPE_KEYS: dict[str, Key] = {
    "epochs": Key(lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "batch_size": Key(lambda v: is_int(v) and v >= 1, "an integer >= 1 (images per iteration, all GPUs)"),
    "lr": Key(lambda v: is_number(v) and v > 0, "a number > 0 (for a batch of lr_reference_batch images)"),
    "lr_reference_batch": Key(lambda v: is_int(v) and v >= 1, "an integer >= 1 (the batch lr is given for)"),
    "momentum": Key(lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": Key(lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "milestones": Key(lambda v: isinstance(v, list) and all(is_int(m) and m >= 1 for m in v)
                      and v == sorted(set(v)), "a strictly increasing list of epochs >= 1"),
    "gamma": Key(lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "warmup_iters": Key(lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "warmup_ratio": Key(lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "min_size": Key(lambda v: is_int(v) and v >= 32, "an integer >= 32 (shorter image side)"),
    "max_size": Key(lambda v: is_int(v) and v >= 32, "an integer >= 32 (longer image side at most)"),
    "trainable_stages": Key(lambda v: is_int(v) and 0 <= v <= 4, "an integer in 0..4 (trained backbone stages, "
                            "counted from the last)"),
}

RUN_KEYS: dict[str, Key] = {
    **COMMON_RUN_KEYS,
    "detector": Key(lambda v: v in DETECTORS, f"one of {list(DETECTORS)}"),
    "dataset": Key(lambda v: v == "coco", "coco", "coco"),
    "depth": Key(is_int, "50 or 101 (an ImageNet ResNet)"),
    "data_root": Key(COMMON_RUN_KEYS["data_root"].check, "a directory path (holding coco/)"),
    "recipe": Key(lambda v: isinstance(v, str) and v != "", "a detection recipe name or a YAML file path", "coco"),
    "pretrained": Key(lambda v: isinstance(v, str) and v != "", "null or the folder of a finished ImageNet run "
                      "(or its checkpoint.pt)", nullable=True),
    # the official detectors train without drop-path
    **knob_keys(exclude=("drop_path",)),
    "test_batch_size": Key(lambda v: is_int(v) and v >= 1, "an integer >= 1 (images per evaluation step)", 2),
    "max_iters_per_epoch": Key(lambda v: is_int(v) and v >= 1, "null or an integer >= 1", nullable=True),
    "max_val_images": Key(lambda v: is_int(v) and v >= 1, "null or an integer >= 1 (evaluate on the first N)",
                          nullable=True),
    "log_every": Key(lambda v: is_int(v) and v >= 0, "an integer >= 0 (iterations; 0: once per epoch)", 20),
}


def _recipe_folder():
    return packaged("recipes", "detection")


def recipe_names() -> list[str]:
    return _names(_recipe_folder())


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """A detection recipe by name (``coco``) or from a YAML file."""
    return read_recipe(name_or_path, _recipe_folder(), RECIPE_KEYS, "detection recipe")


def is_detection(config: Mapping[str, Any]) -> bool:
    """A detection config names a detector (classification configs never do)."""
    return "detector" in config


def resolve(run: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``run`` and return the full resolved detection config."""
    return resolve_keys(run, run.get("recipe") or "coco", load_recipe, RECIPE_KEYS, RUN_KEYS,
                        _cross_checks, "detection run configuration")


def _cross_checks(c: dict[str, Any]) -> list[str]:
    problems = [f"backbone: {p}" for p in fill_model_knobs(c, "imagenet")]
    if any(m > c["epochs"] for m in c["milestones"]):
        problems.append(f"milestones {c['milestones']} lie beyond epochs={c['epochs']}")
    if c["min_size"] > c["max_size"]:
        problems.append(f"min_size={c['min_size']} is larger than max_size={c['max_size']}")
    return problems


class PretrainedWeightsError(RuntimeError):
    """The ImageNet weights a detector should start from are missing, unfinished or do not fit."""


def backbone_run(path: str | Path, arch: str, depth: int) -> dict[str, Any]:
    """Where the ImageNet weights for an ``arch``-``depth`` backbone are (a finished run folder, or a
    checkpoint file) and what is known of them; :class:`PretrainedWeightsError` says why they are
    unusable. Reads no weights, so the workflow checks this before submitting a job."""
    path = Path(path)
    folder, checkpoint = (path, path / "checkpoint.pt") if path.is_dir() else (path.parent, path)
    info: dict[str, Any] = {"path": str(folder), "checkpoint": str(checkpoint)}
    if path.is_dir():
        metrics_file = folder / "metrics.json"
        if not metrics_file.is_file():
            raise PretrainedWeightsError(f"pretrained backbone {folder} has not finished training (no metrics.json)")
        try:
            metrics = json.loads(metrics_file.read_text())
            run = metrics["run"]
        except (ValueError, KeyError, TypeError) as err:
            raise PretrainedWeightsError(f"{metrics_file}: not a dla-repro metrics file ({err})") from None
        if (run.get("dataset"), run.get("arch"), run.get("depth")) != ("imagenet", arch, depth):
            raise PretrainedWeightsError(
                f"pretrained backbone {folder} is {run.get('dataset')}/{run.get('arch')}-{run.get('depth')}, "
                f"not imagenet/{arch}-{depth}")
        info.update(synthetic=bool(metrics.get("synthetic")), weights_sha256=metrics.get("weights_sha256"))
    if not checkpoint.is_file():
        raise PretrainedWeightsError(f"pretrained backbone not found: {checkpoint} does not exist (train the "
                                     f"ImageNet run first, or set pretrained=null to start from random weights)")
    return info


def lr_at(c: Mapping[str, Any], epoch: int, iteration: int) -> float:
    """Learning rate at ``iteration`` (counted over the whole run) in ``epoch`` (0-based): the
    recipe's lr scaled to the batch, linear warm-up from ``warmup_ratio``, then multistep."""
    base = c["lr"] * c["batch_size"] / c["lr_reference_batch"]
    lr = base * c["gamma"] ** sum(epoch >= m for m in c["milestones"])
    if iteration < c["warmup_iters"]:
        lr *= c["warmup_ratio"] + (1 - c["warmup_ratio"]) * iteration / c["warmup_iters"]
    return lr
