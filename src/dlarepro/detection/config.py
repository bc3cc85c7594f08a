"""A detection run's configuration: a detection recipe plus run settings, validated as a whole.

Same conventions as :mod:`dlarepro.config` (flat mapping, ``recipe`` names a file in
``resources/recipes/detection`` or a path, ``key=value`` overrides, one error listing every
problem), with the keys of a COCO run: the detector, the ImageNet run its backbone starts from,
image sizes and an iteration-based warm-up.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from ..archspec import ARCHS, check_model_args
from ..config import ConfigError, Key, _int, _num, _parse_yaml

DETECTORS = ("faster_rcnn", "mask_rcnn")
MODEL_KNOBS = ("cell", "sigma", "reduction")

RECIPE_KEYS: dict[str, Key] = {
    "epochs": Key(lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "batch_size": Key(lambda v: _int(v) and v >= 1, "an integer >= 1 (images per iteration, all GPUs)"),
    "lr": Key(lambda v: _num(v) and v > 0, "a number > 0 (for a batch of lr_reference_batch images)"),
    "lr_reference_batch": Key(lambda v: _int(v) and v >= 1, "an integer >= 1 (the batch lr is given for)"),
    "momentum": Key(lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": Key(lambda v: _num(v) and v >= 0, "a number >= 0"),
    "milestones": Key(lambda v: isinstance(v, list) and all(_int(m) and m >= 1 for m in v)
                      and v == sorted(set(v)), "a strictly increasing list of epochs >= 1"),
    "gamma": Key(lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1]"),
    "warmup_iters": Key(lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "warmup_ratio": Key(lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1]"),
    "min_size": Key(lambda v: _int(v) and v >= 32, "an integer >= 32 (shorter image side)"),
    "max_size": Key(lambda v: _int(v) and v >= 32, "an integer >= 32 (longer image side at most)"),
    "trainable_stages": Key(lambda v: _int(v) and 0 <= v <= 4, "an integer in 0..4 (trained backbone stages, "
                            "counted from the last)"),
}

RUN_KEYS: dict[str, Key] = {
    "detector": Key(lambda v: v in DETECTORS, f"one of {list(DETECTORS)}"),
    "dataset": Key(lambda v: v == "coco", "coco", "coco"),
    "arch": Key(lambda v: v in ARCHS, f"one of {list(ARCHS)}"),
    "depth": Key(_int, "50 or 101 (an ImageNet ResNet)"),
    "data_root": Key(lambda v: isinstance(v, str) and v != "", "a directory path (holding coco/)"),
    "out_dir": Key(lambda v: isinstance(v, str) and v != "", "a directory path"),
    "recipe": Key(lambda v: isinstance(v, str) and v != "", "a detection recipe name or a YAML file path", "coco"),
    "pretrained": Key(lambda v: isinstance(v, str) and v != "", "null or the folder of a finished ImageNet run "
                      "(or its checkpoint.pt)", nullable=True),
    "seed": Key(lambda v: _int(v) and 0 <= v < 2**31, "an integer in [0, 2^31)", 0),
    "cell": Key(lambda v: isinstance(v, str), "a cell name", nullable=True),
    "sigma": Key(lambda v: isinstance(v, str), "a sigma name", nullable=True),
    "reduction": Key(lambda v: _int(v) and v >= 1, "an integer >= 1", nullable=True),
    "device": Key(lambda v: isinstance(v, str) and (v in ("auto", "cpu", "cuda") or v.startswith("cuda:")),
                  "auto, cpu, cuda or cuda:N", "auto"),
    "num_workers": Key(lambda v: _int(v) and v >= 0, "an integer >= 0", 0),
    "threads": Key(lambda v: _int(v) and v >= 1, "null or an integer >= 1", nullable=True),
    "test_batch_size": Key(lambda v: _int(v) and v >= 1, "an integer >= 1 (images per evaluation step)", 2),
    "max_iters_per_epoch": Key(lambda v: _int(v) and v >= 1, "null or an integer >= 1", nullable=True),
    "max_val_images": Key(lambda v: _int(v) and v >= 1, "null or an integer >= 1 (evaluate on the first N)",
                          nullable=True),
    "log_every": Key(lambda v: _int(v) and v >= 0, "an integer >= 0 (iterations; 0: once per epoch)", 20),
}

ALL_KEYS = {**RECIPE_KEYS, **RUN_KEYS}


def _recipe_folder():
    return resources.files("dlarepro") / "resources" / "recipes" / "detection"


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in _recipe_folder().iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """A detection recipe by name (``coco``) or from a YAML file."""
    if name_or_path in recipe_names():
        text, source = (_recipe_folder() / f"{name_or_path}.yaml").read_text(), f"detection recipe {name_or_path!r}"
    elif Path(name_or_path).is_file():
        text, source = Path(name_or_path).read_text(), name_or_path
    else:
        raise ConfigError(f"unknown detection recipe {name_or_path!r}: not one of {recipe_names()} and not a file")
    data = _parse_yaml(text, source)
    unknown = sorted(set(data) - set(RECIPE_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown detection recipe keys {unknown}; they are {sorted(RECIPE_KEYS)}")
    return data


def is_detection(config: Mapping[str, Any]) -> bool:
    """A detection config names a detector (classification configs never do)."""
    return "detector" in config


def resolve(run: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``run`` and return the full resolved detection config."""
    problems: list[str] = []
    for key in (k for k in run if k not in ALL_KEYS):
        close = difflib.get_close_matches(key, list(ALL_KEYS), n=1)
        problems.append(f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    recipe_name = run.get("recipe") or "coco"
    try:
        recipe = load_recipe(recipe_name)
    except ConfigError as err:
        problems.append(str(err))
        recipe = {}
    config: dict[str, Any] = {k: key.default for k, key in RUN_KEYS.items()}
    config.update(recipe)
    config.update({k: v for k, v in run.items() if k in ALL_KEYS})
    config["recipe"] = recipe_name
    for name, key in ALL_KEYS.items():
        value = config.get(name)
        if value is None:
            if not key.nullable:
                where = f" (the recipe {recipe_name!r} does not set it)" if name in RECIPE_KEYS else ""
                problems.append(f"{name} is required: {key.expected}{where}")
        elif not key.check(value):
            problems.append(f"{name}={value!r} is invalid: expected {key.expected}")
    if not problems:
        problems += _cross_checks(config)
    if problems:
        raise ConfigError("invalid detection run configuration:\n  - " + "\n  - ".join(problems))
    return config


def _cross_checks(c: dict[str, Any]) -> list[str]:
    problems = []
    try:
        check_model_args(c["arch"], c["depth"], "imagenet", **model_knobs(c))
    except ValueError as err:
        problems.append(f"backbone: {err}")
    if any(m > c["epochs"] for m in c["milestones"]):
        problems.append(f"milestones {c['milestones']} lie beyond epochs={c['epochs']}")
    if c["min_size"] > c["max_size"]:
        problems.append(f"min_size={c['min_size']} is larger than max_size={c['max_size']}")
    if c["device"].startswith("cuda:") and not c["device"][5:].isdigit():
        problems.append(f"device={c['device']!r} is invalid: expected cuda:N")
    return problems


def model_knobs(c: Mapping[str, Any]) -> dict[str, Any]:
    """The backbone's method knobs (drop-path stays off: the official detectors train without it)."""
    return {k: c[k] for k in MODEL_KNOBS if c.get(k) is not None}


def lr_at(c: Mapping[str, Any], epoch: int, iteration: int) -> float:
    """Learning rate at ``iteration`` (counted over the whole run) in ``epoch`` (0-based): the
    recipe's lr scaled to the batch, linear warm-up from ``warmup_ratio``, then multistep."""
    base = c["lr"] * c["batch_size"] / c["lr_reference_batch"]
    lr = base * c["gamma"] ** sum(epoch >= m for m in c["milestones"])
    if iteration < c["warmup_iters"]:
        lr *= c["warmup_ratio"] + (1 - c["warmup_ratio"]) * iteration / c["warmup_iters"]
    return lr
