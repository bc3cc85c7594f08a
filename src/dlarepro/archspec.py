"""What each model of the zoo accepts, importable without torch.

The workflow validates whole experiment grids when Snakemake builds its DAG and before every
submission; importing torch there would cost seconds per job. The classes in
``models/interactions.py`` implement these methods (a test checks both agree).
"""

from __future__ import annotations

from typing import Any

DATASETS = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
IMAGENET_DEPTHS = (50, 101)
CELLS = ("dsu", "dia", "lstm", "rnn")
SIGMAS = ("sigmoid", "identity", "tanh", "relu")

_LAYER_ATTENTION = {"drop_path": ()}
_DYNAMIC = {"drop_path": (), "cell": CELLS, "sigma": SIGMAS, "reduction": ()}
#: method -> knob -> allowed values (empty tuple: a number, checked below)
ARCH_KNOBS: dict[str, dict[str, tuple[Any, ...]]] = {
    "none": {},
    "se": {},
    "eca": {},
    "dia": {"cell": ("dia", "lstm", "dsu"), "sigma": SIGMAS, "reduction": ()},
    "mrla_l": _LAYER_ATTENTION,
    "dla_l": _DYNAMIC,
    "mrla_b": _LAYER_ATTENTION,
    "dla_b": _DYNAMIC,
}
ARCHS = tuple(ARCH_KNOBS)
#: method -> default knob values (the constructors' defaults)
DEFAULTS: dict[str, dict[str, Any]] = {
    "dia": {"cell": "dia", "sigma": "sigmoid", "reduction": 4},
    "mrla_l": {"drop_path": 0.0},
    "mrla_b": {"drop_path": 0.0},
    "dla_l": {"drop_path": 0.0, "cell": "dsu", "sigma": "sigmoid", "reduction": 4},
    "dla_b": {"drop_path": 0.0, "cell": "dsu", "sigma": "sigmoid", "reduction": 4},
}
#: defaults that differ by family: the official ImageNet code uses a DSU reduction of 16
FAMILY_DEFAULTS = {"imagenet": {"reduction": 16}}


def check_depth(depth: Any, dataset: str) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise ValueError(f"depth must be an integer, got {depth!r}")
    if dataset == "imagenet":
        if depth not in IMAGENET_DEPTHS:
            raise ValueError(f"ImageNet depth must be one of {list(IMAGENET_DEPTHS)}, got {depth}")
    elif depth < 11 or (depth - 2) % 9:
        lower = max(11, depth - (depth - 2) % 9)
        raise ValueError(
            f"CIFAR bottleneck depth must be 9n+2 with n >= 1 (11, 20, 29, ..., 56, ..., 110), got {depth}; "
            f"nearest valid: {lower} or {lower + 9}"
        )


def check_model_args(arch: str, depth: int, dataset: str, **knobs: Any) -> dict[str, Any]:
    """Validate a model request; return the knobs with family defaults filled in.

    Raises ``ValueError`` naming the bad value and what is allowed.
    """
    if arch not in ARCH_KNOBS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {list(ARCH_KNOBS)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {list(DATASETS)}")
    check_depth(depth, dataset)
    allowed = ARCH_KNOBS[arch]
    for key, value in knobs.items():
        if key not in allowed:
            accepted = ", ".join(allowed) or "none"
            raise ValueError(f"{arch} does not take the knob {key!r} (accepted: {accepted})")
        if allowed[key] and value not in allowed[key]:
            raise ValueError(f"{arch}: {key}={value!r} is not one of {list(allowed[key])}")
    reduction = knobs.get("reduction", 1)
    if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
        raise ValueError(f"{arch}: reduction must be a positive integer, got {reduction!r}")
    drop_path = knobs.get("drop_path", 0.0)
    if isinstance(drop_path, bool) or not isinstance(drop_path, (int, float)) or not 0 <= drop_path < 1:
        raise ValueError(f"{arch}: drop_path must be a number in [0, 1), got {drop_path!r}")
    defaults = DEFAULTS.get(arch, {})
    cell, sigma = knobs.get("cell", defaults.get("cell")), knobs.get("sigma", "sigmoid")
    if sigma != "sigmoid" and cell != "dsu":
        raise ValueError(f"{arch}: sigma={sigma!r} only applies to the DSU cell, not cell={cell!r}")
    family = {k: v for k, v in FAMILY_DEFAULTS.get(dataset, {}).items() if k in allowed}
    return {**family, **knobs}
