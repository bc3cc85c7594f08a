"""The model zoo: ``build_model(arch, depth, dataset, **knobs)`` builds every network of the paper.

What each method is and accepts is declared in :mod:`dlarepro.methods` (no torch import there); its
network class is registered under the same name in :mod:`dlarepro.models.interactions`.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from ..methods import DATASETS, check_model_args, display_name
from .interactions import INTERACTIONS
from .resnet import ResNet, cifar_resnet, imagenet_resnet

__all__ = ["ResNet", "build_model", "display_name", "interaction_factory"]


def interaction_factory(arch: str, **knobs: Any):
    """The class registered as ``arch`` with its knobs bound: ``factory(channels, num_blocks)``."""
    return functools.partial(INTERACTIONS[arch], **knobs)


def build_model(arch: str, depth: int, dataset: str, *, num_classes: int | None = None, **knobs: Any) -> nn.Module:
    """Build ``arch`` (a registry name, e.g. ``"dla_l"``) at ``depth`` for ``dataset``.

    Knobs are validated against the method's spec (:mod:`dlarepro.methods`), e.g. ``drop_path``
    (attention branch of MRLA/DLA), ``cell``, ``sigma``, ``reduction`` (default 4 on CIFAR, 16 on
    ImageNet as in the official code). ``num_classes`` overrides the dataset's class count.
    """
    knobs = check_model_args(arch, depth, dataset, **knobs)
    classes = DATASETS[dataset] if num_classes is None else num_classes
    family = imagenet_resnet if dataset == "imagenet" else cifar_resnet
    return family(depth, classes, interaction_factory(arch, **knobs))
