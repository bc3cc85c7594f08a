"""Run configurations, whatever the kind of run: keys, recipes, overrides and one resolver.

A run config is a flat mapping. ``recipe`` names a YAML file packaged for the run's kind (or a
path to one); recipe values are defaults that the run file and command-line overrides
(``key=value``) replace. Every key is checked, then the kind's cross-checks run; one
:class:`ConfigError` lists every problem. The resolved config has every default filled in,
including the knobs of the run's method (:mod:`dlarepro.methods`), so ``config.yaml`` and
``run.yaml`` say exactly what was trained.

This module knows no run kind: classification and detection declare their own keys and checks
on top of :data:`COMMON_RUN_KEYS` (``dlarepro.classification.config``, ``dlarepro.detection.config``).
"""

from __future__ import annotations

import copy
import difflib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

from . import yamlfile
from .methods import METHODS, check_model_args, knob_names


class ConfigError(ValueError):
    """A run configuration that cannot be trained; the message lists every problem."""


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class Key:
    check: Callable[[Any], bool]  # applied to non-null values
    expected_text: str | Callable[[], str]  # what a valid value is (a callable: computed when shown)
    default: Any = None
    nullable: bool = False  # may the resolved value be null?
    #: turns an accepted spelling into the one value the resolved config holds (e.g. YAML's ``off`` -> "off")
    normalize: Callable[[Any], Any] | None = None

    @property
    def expected(self) -> str:
        return self.expected_text() if callable(self.expected_text) else self.expected_text


def _path(v: Any) -> bool:
    return isinstance(v, str) and v != "" and "\n" not in v and "\0" not in v


AMP_MODES = ("off", "bf16", "fp16")
#: how the layer-attention tails run (dlarepro.models.tails): auto = fused and compiled on CUDA, the
#: C++ kernels on the CPU where they apply (channels-last float maps), the op-by-op reference elsewhere
TAIL_MODES = ("auto", "compiled", "eager", "reference", "native")


def _device(v: Any) -> bool:
    return isinstance(v, str) and (v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()))


#: keys every kind of run takes (the model knobs are added from the method specs)
COMMON_RUN_KEYS: dict[str, Key] = {
    "dataset": Key(lambda v: isinstance(v, str), "a dataset name"),
    "arch": Key(lambda v: v in METHODS, lambda: f"one of {list(METHODS)}"),
    "depth": Key(is_int, "an integer (CIFAR 9n+2, ImageNet 50/101)"),
    "data_root": Key(_path, "a directory path"),
    "out_dir": Key(_path, "a directory path"),
    "recipe": Key(lambda v: isinstance(v, str) and v != "", "a recipe name or a YAML file path"),
    "seed": Key(lambda v: is_int(v) and 0 <= v < 2**31, "an integer in [0, 2^31)", 0),
    "device": Key(_device, "auto, cpu, cuda or cuda:N", "auto"),
    "num_workers": Key(lambda v: v == "auto" or (is_int(v) and v >= 0),
                       "auto (the CPUs of this task, less one for the trainer) or an integer >= 0", "auto"),
    "threads": Key(lambda v: is_int(v) and v >= 1, "null or an integer >= 1", nullable=True),
    # speed switches: their defaults keep the paper's setting (fp32, eager, the fastest cuDNN algorithms)
    "amp": Key(lambda v: v in AMP_MODES or v is False, f"one of {list(AMP_MODES)} (mixed precision; off = fp32)",
               "off", normalize=lambda v: "off" if v is False else v),
    "compile": Key(lambda v: isinstance(v, bool), "true or false (torch.compile the training step)", False),
    "deterministic": Key(lambda v: isinstance(v, bool), "true or false (true: deterministic algorithms and the "
                         "cuBLAS workspace setting, so a resumed GPU run is bit-identical; false: "
                         "cudnn.benchmark)", False),
    "tails": Key(lambda v: v in TAIL_MODES, f"one of {list(TAIL_MODES)} (how the layer-attention tails run: "
                 "auto = fused and compiled on CUDA, native on the CPU where it applies, else the op-by-op reference; "
                 "native = the join, tails and their depthwise convolutions in C++ on the CPU, compiled elsewhere)",
                 "auto"),
    "force_distributed": Key(lambda v: isinstance(v, bool), "true or false (create the process group, DDP and "
                             "every collective even in a one-process job)", False),
}

#: the speed switches and their defaults (metrics.json records them under ``switches``)
SWITCHES: dict[str, Any] = {"amp": "off", "compile": False, "deterministic": False, "tails": "auto"}

#: keys that do not change what is computed (a run may resume with other values)
NON_SEMANTIC = ("out_dir", "data_root", "num_workers", "log_every", "device", "capture_attention",
                "eval_batch_sizes", "force_distributed")
#: keys added after runs were trained, with the value that reproduces what those runs did: a key
#: at this value is left out of the digest, so adding it does not make every finished run stale
#: (the speed switches at their defaults). Register a new semantic key here when its default keeps
#: the old behaviour.
DIGEST_NEUTRAL: dict[str, Any] = dict(SWITCHES)


def semantic_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a config computes: every key but the non-semantic ones and keys at their neutral value."""
    return {k: v for k, v in sorted(config.items())
            if k not in NON_SEMANTIC and not (k in DIGEST_NEUTRAL and v == DIGEST_NEUTRAL[k])}


def config_digest(config: Mapping[str, Any]) -> str:
    """16 hex digits naming what a resolved config computes (checkpoints, metrics.json, staleness)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(semantic_config(config), sort_keys=True).encode()).hexdigest()[:16]


def knob_keys(exclude: tuple[str, ...] = ()) -> dict[str, Key]:
    """One nullable run key per method knob (checked against the method's spec when resolving)."""

    def expected(name: str) -> str:
        takers = [spec for spec in METHODS.values() if name in spec.knob_names]
        choices = list(dict.fromkeys(c for spec in takers for c in spec.knob(name).choices))
        allowed = f"one of {choices}" if choices else takers[0].knob(name).expected
        return f"{allowed}, for {', '.join(s.name for s in takers)} (default: the method's)"

    return {name: Key(lambda v: v is not None, lambda name=name: expected(name), nullable=True)
            for name in knob_names() if name not in exclude}


def recipe_names(folder) -> list[str]:
    """Names of the packaged recipes in ``folder``."""
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def packaged(*parts: str):
    """A folder of the package's resources, e.g. ``packaged("recipes")``."""
    return resources.files("dlarepro").joinpath("resources", *parts)


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
    data = parse_mapping(text, source)
    unknown = sorted(set(data) - set(recipe_keys))
    if unknown:
        raise ConfigError(f"{source}: unknown {kind} keys {unknown}; {kind} keys are {sorted(recipe_keys)}")
    return data


def parse_mapping(text: str, source: str) -> dict[str, Any]:
    try:
        data = yamlfile.parse(text, source)
    except yamlfile.YamlError as err:
        raise ConfigError(str(err)) from None
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
        out[key.strip()] = parse_mapping(f"v: {value}", f"override {item!r}")["v"] if value.strip() else None
    return out


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
    config: dict[str, Any] = {k: copy.deepcopy(key.default) for k, key in run_keys.items()}  # no shared lists
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
        elif key.normalize is not None:
            config[name] = key.normalize(value)
    if not problems:
        problems += cross_checks(config)
    if problems:
        raise ConfigError(f"invalid {what}:\n  - " + "\n  - ".join(problems))
    return config


def fill_model_knobs(c: dict[str, Any], dataset: str, recipe_knobs: tuple[str, ...] = ()) -> list[str]:
    """Validate the config's model against its method and write every knob default into ``c``
    (knobs the method does not take stay null). ``recipe_knobs`` are knobs the recipe sets for
    every method (drop-path): passed only to methods that take them. Returns the problems."""
    spec = METHODS[c["arch"]]
    given = {k: c[k] for k in knob_names() if c.get(k) is not None
             and (k in spec.knob_names or k not in recipe_knobs)}
    try:
        full = check_model_args(c["arch"], c["depth"], dataset, **given)
    except ValueError as err:
        return [str(err)]
    for name in knob_names():
        if name not in recipe_knobs and name in c:
            c[name] = full.get(name)
    return []


def model_knobs(c: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs a resolved config passes to ``build_model``: those its method takes."""
    return {k: c[k] for k in METHODS[c["arch"]].knob_names if c.get(k) is not None}


def load_run_config(path: str | os.PathLike | None, overrides: list[str] | None,
                    resolver: Callable[[Mapping[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """Read a run file (YAML), apply ``key=value`` overrides, validate and resolve with ``resolver``."""
    run: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        run = parse_mapping(p.read_text(), str(p))
    run.update(parse_overrides(overrides or []))
    return resolver(run)


@dataclass(frozen=True)
class RunKind:
    """What a kind of run declares (``dlarepro.kinds`` dispatches between them).

    ``config`` is its torch-free config module (``RECIPE_KEYS``, ``RUN_KEYS``, ``resolve``,
    ``recipe_names``); ``engine`` the ``module:function`` that trains one run, imported on use.
    """

    name: str
    command: str
    config: Any
    engine: str
    description: str
    matches: Callable[[Mapping[str, Any]], bool]

    def resolve(self, run: Mapping[str, Any]) -> dict[str, Any]:
        return self.config.resolve(run)

    def train(self, config: dict[str, Any], progress: bool | None = None) -> dict[str, Any]:
        import importlib

        module, function = self.engine.split(":")
        return getattr(importlib.import_module(module), function)(config, progress)
