"""The model zoo: ``build_model(arch, depth, dataset, **knobs)`` builds every network of the paper.

What each method accepts is declared in ``dlarepro.archspec`` (no torch import there).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..archspec import ARCHS, CELLS, DATASETS, SIGMAS, check_model_args
from .resnet import CifarResNet, ImageNetResNet

__all__ = ["ARCHS", "CELLS", "DATASETS", "SIGMAS", "build_model", "check_model_args", "display_name"]

DISPLAY = {"none": "ResNet", "se": "SE", "eca": "ECA", "dia": "DIANet", "mrla_b": "MRLA-B",
           "mrla_l": "MRLA-L", "dla_b": "DLA-B", "dla_l": "DLA-L"}


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
