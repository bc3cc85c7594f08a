"""One training run's configuration: a recipe (named file) plus run settings, validated as a whole.

A run config is a flat mapping. ``recipe`` names a file in ``resources/recipes`` (``cifar``,
``imagenet``, ``smoke``) or a path to one; recipe values are defaults that the run file and
command-line overrides (``key=value``) replace. Unknown keys and impossible values are rejected
with one message that names every problem.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from .archspec import ARCH_KNOBS, ARCHS, DATASETS, check_model_args


class ConfigError(ValueError):
    """A run configuration that cannot be trained; the message lists every problem."""


def _int(v): return isinstance(v, int) and not isinstance(v, bool)
def _num(v): return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Key:
    check: Callable[[Any], bool]  # applied to non-null values
    expected: str
    default: Any = None
    nullable: bool = False  # may the resolved value be null?


RECIPE_KEYS: dict[str, Key] = {
    "epochs": Key(lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "batch_size": Key(lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "test_batch_size": Key(lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "lr": Key(lambda v: _num(v) and v > 0, "a number > 0"),
    "momentum": Key(lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "nesterov": Key(lambda v: isinstance(v, bool), "true or false"),
    "weight_decay": Key(lambda v: _num(v) and v >= 0, "a number >= 0"),
    "milestones": Key(lambda v: isinstance(v, list) and all(_int(m) and m >= 1 for m in v)
                      and v == sorted(set(v)), "a strictly increasing list of epochs >= 1"),
    "gamma": Key(lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1]"),
    "step_size": Key(lambda v: _int(v) and v >= 1, "null or an integer >= 1", nullable=True),
    "warmup_epochs": Key(lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "warmup_start_lr": Key(lambda v: _num(v) and v >= 0, "a number >= 0"),
    "drop_path": Key(lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
}

RUN_KEYS: dict[str, Key] = {
    "dataset": Key(lambda v: v in DATASETS, f"one of {list(DATASETS)}"),
    "arch": Key(lambda v: v in ARCHS, f"one of {list(ARCHS)}"),
    "depth": Key(_int, "an integer (CIFAR 9n+2, ImageNet 50/101)"),
    "data_root": Key(lambda v: isinstance(v, str) and v != "", "a directory path"),
    "out_dir": Key(lambda v: isinstance(v, str) and v != "", "a directory path"),
    "recipe": Key(lambda v: isinstance(v, str) and v != "", "a recipe name or a YAML file path"),
    "seed": Key(lambda v: _int(v) and 0 <= v < 2**31, "an integer in [0, 2^31)", 0),
    "cell": Key(lambda v: isinstance(v, str), "a cell name", nullable=True),
    "sigma": Key(lambda v: isinstance(v, str), "a sigma name", nullable=True),
    "reduction": Key(lambda v: _int(v) and v >= 1, "an integer >= 1", nullable=True),
    "device": Key(lambda v: isinstance(v, str) and (v in ("auto", "cpu", "cuda") or v.startswith("cuda:")),
                  "auto, cpu, cuda or cuda:N", "auto"),
    "num_workers": Key(lambda v: _int(v) and v >= 0, "an integer >= 0", 0),
    "threads": Key(lambda v: _int(v) and v >= 1, "null or an integer >= 1", nullable=True),
    "channels_last": Key(lambda v: isinstance(v, bool), "true or false", True),
    "capture_attention": Key(lambda v: isinstance(v, bool), "true or false", False),
    "max_batches_per_epoch": Key(lambda v: _int(v) and v >= 1, "null or an integer >= 1", nullable=True),
    "log_every": Key(lambda v: _int(v) and v >= 0, "an integer >= 0 (batches; 0: once per epoch)", 0),
    "crop_size": Key(lambda v: _int(v) and v >= 16, "an integer >= 16 (ImageNet train crop; the test image is "
                     "resized to crop * 256/224, then centre-cropped)", 224),
}

ALL_KEYS = {**RECIPE_KEYS, **RUN_KEYS}
MODEL_KNOBS = ("cell", "sigma", "reduction")
CAPTURE_ARCHS = ("mrla_b", "dla_b")


def _recipe_folder():
    return resources.files("dlarepro") / "resources" / "recipes"


def recipe_names(folder=None) -> list[str]:
    """Names of the packaged recipes in ``folder`` (default: the classification recipes)."""
    folder = folder or _recipe_folder()
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_recipe(name_or_path: str, folder, recipe_keys: Mapping[str, Key], kind: str = "recipe") -> dict[str, Any]:
    """A ``kind`` of recipe by packaged name (a YAML file in ``folder``) or from a YAML file path;
    keys outside ``recipe_keys`` are refused."""
    names = recipe_names(folder)
    if name_or_path in names:
        text, source = (folder / f"{name_or_path}.yaml").read_text(), f"{kind} {name_or_path!r}"
    elif Path(name_or_path).is_file():
        text, source = Path(name_or_path).read_text(), name_or_path
    else:
        raise ConfigError(f"unknown {kind} {name_or_path!r}: not one of {names} and not a file")
    data = _parse_yaml(text, source)
    unknown = sorted(set(data) - set(recipe_keys))
    if unknown:
        raise ConfigError(f"{source}: unknown {kind} keys {unknown}; {kind} keys are {sorted(recipe_keys)}")
    return data


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """A recipe by name (``cifar``, ``imagenet``, ``smoke``) or from a YAML file."""
    return read_recipe(name_or_path, _recipe_folder(), RECIPE_KEYS)


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=0.05", "milestones=[2,3]"]`` -> values parsed as YAML scalars/lists."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        out[key.strip()] = _parse_yaml(f"v: {value}", f"override {item!r}")["v"] if value.strip() else None
    return out


def default_recipe(dataset: Any) -> str:
    return "imagenet" if dataset == "imagenet" else "cifar"


def resolve(run: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``run`` (run keys, recipe keys as overrides) and return the full resolved config."""
    return resolve_keys(run, run.get("recipe") or default_recipe(run.get("dataset")), load_recipe,
                        RECIPE_KEYS, RUN_KEYS, _cross_checks, "run configuration")


def resolve_any(run: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`resolve` for a classification run, the detection resolver for a run naming a detector."""
    from .detection.config import is_detection, resolve as resolve_detection

    return (resolve_detection if is_detection(run) else resolve)(run)


def resolve_keys(run: Mapping[str, Any], recipe_name: str, load: Callable[[str], dict[str, Any]],
                 recipe_keys: Mapping[str, Key], run_keys: Mapping[str, Key],
                 cross_checks: Callable[[dict[str, Any]], list[str]], what: str) -> dict[str, Any]:
    """Run-key defaults, then the recipe ``load(recipe_name)``, then ``run``; every key checked, then
    ``cross_checks`` on a config whose keys are all valid. One :class:`ConfigError` lists every problem."""
    all_keys = {**recipe_keys, **run_keys}
    problems: list[str] = []
    for key in (k for k in run if k not in all_keys):
        close = difflib.get_close_matches(key, list(all_keys), n=1)
        problems.append(f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    try:
        recipe = load(recipe_name)
    except ConfigError as err:
        problems.append(str(err))
        recipe = {}
    config: dict[str, Any] = {k: key.default for k, key in run_keys.items()}
    config.update(recipe)
    config.update({k: v for k, v in run.items() if k in all_keys})
    config["recipe"] = recipe_name

    for name, key in all_keys.items():
        value = config.get(name)
        if value is None:
            if not key.nullable:
                where = f" (the recipe {recipe_name!r} does not set it)" if name in recipe_keys else ""
                problems.append(f"{name} is required: {key.expected}{where}")
        elif not key.check(value):
            problems.append(f"{name}={value!r} is invalid: expected {key.expected}")
    if not problems:
        problems += cross_checks(config)
    if problems:
        raise ConfigError(f"invalid {what}:\n  - " + "\n  - ".join(problems))
    return config


def _cross_checks(c: dict[str, Any]) -> list[str]:
    problems = []
    try:
        check_model_args(c["arch"], c["depth"], c["dataset"], **model_knobs(c))
    except ValueError as err:
        problems.append(str(err))
    if any(m > c["epochs"] for m in c["milestones"]):
        problems.append(f"milestones {c['milestones']} lie beyond epochs={c['epochs']}")
    if c["warmup_epochs"] >= c["epochs"]:
        problems.append(f"warmup_epochs={c['warmup_epochs']} leaves no training after warm-up (epochs={c['epochs']})")
    if c["step_size"] is not None and c["milestones"]:
        problems.append("set either milestones or step_size, not both")
    if c["capture_attention"] and c["arch"] not in CAPTURE_ARCHS:
        problems.append(f"capture_attention is only available for {list(CAPTURE_ARCHS)}, not arch={c['arch']!r}")
    return problems + device_problems(c["device"])


def device_problems(device: str) -> list[str]:
    return [f"device={device!r} is invalid: expected cuda:N"] if device.startswith("cuda:") and not device[5:].isdigit() else []


def model_knobs(c: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs the run passes to ``build_model`` (drop-path only where the method has it)."""
    knobs = {k: c[k] for k in MODEL_KNOBS if c.get(k) is not None}
    if "drop_path" in ARCH_KNOBS[c["arch"]]:
        knobs["drop_path"] = c["drop_path"]
    return knobs


def load_run_config(path: str | os.PathLike | None, overrides: list[str] | None = None,
                    resolver: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Read a run file (YAML), apply ``key=value`` overrides, validate and resolve (with
    ``resolver``, e.g. the detection runs' own, instead of :func:`resolve`)."""
    run: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        run = _parse_yaml(p.read_text(), str(p))
    run.update(parse_overrides(overrides or []))
    return (resolver or resolve)(run)


def lr_at(config: Mapping[str, Any], epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based): linear warm-up, then multistep or every-k decay."""
    base, warm = config["lr"], config["warmup_epochs"]
    if epoch < warm:
        return config["warmup_start_lr"] + (base - config["warmup_start_lr"]) * epoch / warm
    if config["step_size"]:
        return base * config["gamma"] ** (epoch // config["step_size"])
    return base * config["gamma"] ** sum(epoch >= m for m in config["milestones"])
