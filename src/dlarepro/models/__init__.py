"""The model zoo: ``build_model(arch, depth, dataset, **knobs)`` builds every network of the paper."""

from __future__ import annotations

from typing import Any

from torch import nn

from .cells import CELLS, SIGMAS
from .interactions import INTERACTIONS
from .resnet import IMAGENET_LAYERS, CifarResNet, ImageNetResNet

__all__ = ["ARCHS", "CELLS", "DATASETS", "SIGMAS", "build_model", "check_model_args", "display_name"]

#: dataset -> number of classes; the dataset decides the family (101 is a valid CIFAR depth too)
DATASETS = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
ARCHS = tuple(INTERACTIONS)
DISPLAY = {"none": "ResNet", "se": "SE", "eca": "ECA", "dia": "DIANet", "mrla_b": "MRLA-B",
           "mrla_l": "MRLA-L", "dla_b": "DLA-B", "dla_l": "DLA-L"}
#: defaults that differ by family: the official ImageNet code uses a DSU reduction of 16
FAMILY_DEFAULTS = {"imagenet": {"reduction": 16}}


def _check_depth(depth: Any, dataset: str) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise ValueError(f"depth must be an integer, got {depth!r}")
    if dataset == "imagenet":
        if depth not in IMAGENET_LAYERS:
            raise ValueError(f"ImageNet depth must be one of {sorted(IMAGENET_LAYERS)}, got {depth}")
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
    if arch not in INTERACTIONS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {list(INTERACTIONS)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {list(DATASETS)}")
    _check_depth(depth, dataset)
    allowed = INTERACTIONS[arch].KNOBS
    for key, value in knobs.items():
        if key not in allowed:
            accepted = ", ".join(allowed) or "none"
            raise ValueError(f"{arch} does not take the knob {key!r} (accepted: {accepted})")
        choices = allowed[key]
        if choices and value not in choices:
            raise ValueError(f"{arch}: {key}={value!r} is not one of {list(choices)}")
    if "reduction" in knobs and (isinstance(knobs["reduction"], bool) or not isinstance(knobs["reduction"], int)
                                 or knobs["reduction"] < 1):
        raise ValueError(f"{arch}: reduction must be a positive integer, got {knobs['reduction']!r}")
    if "drop_path" in knobs and not (isinstance(knobs["drop_path"], (int, float)) and 0 <= knobs["drop_path"] < 1):
        raise ValueError(f"{arch}: drop_path must be a number in [0, 1), got {knobs['drop_path']!r}")
    INTERACTIONS[arch].check_knobs(**knobs)
    defaults = {k: v for k, v in FAMILY_DEFAULTS.get(dataset, {}).items() if k in allowed}
    return {**defaults, **knobs}


def build_model(arch: str, depth: int, dataset: str, *, num_classes: int | None = None, **knobs: Any) -> nn.Module:
    """Build ``arch`` (a registry name, e.g. ``"dla_l"``) at ``depth`` for ``dataset``.

    Knobs (validated per method): ``drop_path`` (attention branch of MRLA/DLA), ``cell`` (DLA:
    dsu/rnn/lstm/dia; DIA/LII: dia/lstm/dsu), ``sigma`` (DSU: sigmoid/identity/tanh/relu),
    ``reduction`` (DSU/DIA cells; default 4 on CIFAR, 16 on ImageNet as in the official code).
    ``num_classes`` overrides the dataset's class count (tiny test datasets).
    """
    knobs = check_model_args(arch, depth, dataset, **knobs)
    classes = DATASETS[dataset] if num_classes is None else num_classes
    family = ImageNetResNet if dataset == "imagenet" else CifarResNet
    return family(depth, classes, interaction=arch, **knobs)


def display_name(arch: str, depth: int, **knobs: Any) -> str:
    """A reader's name for a model, e.g. ``DLA-L-110 (cell=lstm)``."""
    extras = ", ".join(f"{k}={v}" for k, v in sorted(knobs.items()) if k != "drop_path")
    return f"{DISPLAY[arch]}-{depth}" + (f" ({extras})" if extras else "")
