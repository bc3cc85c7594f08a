"""A classification run's configuration (CIFAR-10/100, ImageNet): its recipe keys, run keys and
cross-checks on top of :mod:`dlarepro.runconfig`.

``recipe`` names a file in ``resources/recipes`` (``cifar``, ``imagenet``, ``smoke``) or a path to
one; when it is not given, CIFAR runs take ``cifar`` and ImageNet runs ``imagenet``.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..runconfig import (COMMON_RUN_KEYS, ConfigError, Key, fill_model_knobs, is_int, is_number, knob_keys,
                         packaged, read_recipe, recipe_names as _names, resolve_keys)

DATASETS = ("cifar10", "cifar100", "imagenet")

RECIPE_KEYS: dict[str, Key] = {
    "epochs": Key(lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "batch_size": Key(lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "test_batch_size": Key(lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "lr": Key(lambda v: is_number(v) and v > 0, "a number > 0"),
    "momentum": Key(lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "nesterov": Key(lambda v: isinstance(v, bool), "true or false"),
    "weight_decay": Key(lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "milestones": Key(lambda v: isinstance(v, list) and all(is_int(m) and m >= 1 for m in v)
                      and v == sorted(set(v)), "a strictly increasing list of epochs >= 1"),
    "gamma": Key(lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "step_size": Key(lambda v: is_int(v) and v >= 1, "null or an integer >= 1", nullable=True),
    "warmup_epochs": Key(lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "warmup_start_lr": Key(lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "drop_path": Key(lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
}

RUN_KEYS: dict[str, Key] = {
    **COMMON_RUN_KEYS,
    "dataset": Key(lambda v: v in DATASETS, f"one of {list(DATASETS)}"),
    **knob_keys(exclude=tuple(RECIPE_KEYS)),
    "channels_last": Key(lambda v: isinstance(v, bool), "true or false", True),
    "capture_attention": Key(lambda v: isinstance(v, bool), "true or false", False),
    "max_batches_per_epoch": Key(lambda v: is_int(v) and v >= 1, "null or an integer >= 1", nullable=True),
    "log_every": Key(lambda v: is_int(v) and v >= 0, "an integer >= 0 (batches; 0: once per epoch)", 0),
    "eval_batch_sizes": Key(lambda v: isinstance(v, list) and all(is_int(b) and b >= 1 for b in v)
                            and len(set(v)) == len(v),
                            "a list of distinct integers >= 1 (test batch sizes at which the final model is "
                            "evaluated again, recorded as final_top1_batch<N>; models whose output depends "
                            "on the batch, dsu_state=first_image, score differently)", []),
    "crop_size": Key(lambda v: is_int(v) and v >= 16, "an integer >= 16 (ImageNet train crop; the test image is "
                     "resized to crop * 256/224, then centre-cropped)", 224),
}


def _recipe_folder():
    return packaged("recipes")


def recipe_names() -> list[str]:
    return _names(_recipe_folder())


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """A recipe by name (``cifar``, ``imagenet``, ``smoke``) or from a YAML file."""
    return read_recipe(name_or_path, _recipe_folder(), RECIPE_KEYS)


def default_recipe(dataset: Any) -> str:
    return "imagenet" if dataset == "imagenet" else "cifar"


def resolve(run: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``run`` (run keys, recipe keys as overrides) and return the full resolved config."""
    return resolve_keys(run, run.get("recipe") or default_recipe(run.get("dataset")), load_recipe,
                        RECIPE_KEYS, RUN_KEYS, _cross_checks, "run configuration")


def _cross_checks(c: dict[str, Any]) -> list[str]:
    from ..methods import METHODS

    problems = fill_model_knobs(c, c["dataset"], recipe_knobs=("drop_path",))
    if any(m > c["epochs"] for m in c["milestones"]):
        problems.append(f"milestones {c['milestones']} lie beyond epochs={c['epochs']}")
    if c["warmup_epochs"] >= c["epochs"]:
        problems.append(f"warmup_epochs={c['warmup_epochs']} leaves no training after warm-up (epochs={c['epochs']})")
    if c["step_size"] is not None and c["milestones"]:
        problems.append("set either milestones or step_size, not both")
    capture = [name for name, spec in METHODS.items() if spec.captures_attention]
    if c["capture_attention"] and c["arch"] not in capture:
        problems.append(f"capture_attention is only available for {capture}, not arch={c['arch']!r}")
    return problems


def lr_at(config: Mapping[str, Any], epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based): linear warm-up, then multistep or every-k decay."""
    base, warm = config["lr"], config["warmup_epochs"]
    if epoch < warm:
        return config["warmup_start_lr"] + (base - config["warmup_start_lr"]) * epoch / warm
    if config["step_size"]:
        return base * config["gamma"] ** (epoch // config["step_size"])
    return base * config["gamma"] ** sum(epoch >= m for m in config["milestones"])


__all__ = ["ConfigError", "RECIPE_KEYS", "RUN_KEYS", "default_recipe", "load_recipe", "lr_at", "recipe_names",
           "resolve"]
