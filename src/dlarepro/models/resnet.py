"""Bottleneck ResNets for CIFAR (depth 9n+2) and ImageNet (50/101) with a pluggable interaction.

Read top to bottom: the bottleneck block returns its two parts, a stage runs its blocks through the
stage's interaction (``interactions.py``, handed over as a factory), and one ``ResNet`` class builds
both families, which differ only in stem, widths, depths and initialisation.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .interactions import StageInteraction


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride) → 1×1 (×4) with BN after each conv; projection shortcut when needed.

    The block does not add its parts: the stage's interaction decides how branch and shortcut meet.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        width = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != width:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        branch = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return branch, shortcut


class Stage(nn.Module):
    """``num_blocks`` bottlenecks (the first one strided) joined by one interaction, built by
    ``interaction(channels, num_blocks)`` (a registered class or a ``functools.partial`` of one)."""

    def __init__(self, inplanes: int, planes: int, num_blocks: int, stride: int,
                 interaction: Callable[[int, int], StageInteraction]):
        super().__init__()
        width = planes * Bottleneck.expansion
        self.blocks = nn.ModuleList(
            Bottleneck(inplanes if i == 0 else width, planes, stride if i == 0 else 1) for i in range(num_blocks)
        )
        self.interaction: StageInteraction = interaction(width, num_blocks)

    def forward(self, x: Tensor) -> Tensor:
        state = self.interaction.begin(x)
        for index, block in enumerate(self.blocks):
            branch, shortcut = block(x)
            x, state = self.interaction(index, branch, shortcut, state)
        return x


def init_weights(model: nn.Module, zero_init_last_bn: bool) -> None:
    """Conv weights ~ N(0, sqrt(2 / (k·k·out))) (He, fan-out; depthwise convs too), BN 1/0,
    Linear and Conv1d keep PyTorch defaults; optionally zero each bottleneck's last BN."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_last_bn:
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)


def cifar_stem() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))


def imagenet_stem() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64),
                         nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))


class ResNet(nn.Module):
    """Stem, then one :class:`Stage` per entry of ``layers`` (planes doubling from ``planes``, the
    first stage unstrided), global pool and a linear head.

    CIFAR: 3×3 stem of 16 channels, three stages of 16/32/64 planes with (depth − 2) / 9 blocks each.
    ImageNet: torchvision's ResNet-50/101 (7×7 stem, max-pool, 64/128/256/512 planes, stride on
    the 3×3 conv), every bottleneck's last BN zero-initialised.
    """

    def __init__(self, layers: Sequence[int], interaction: Callable[[int, int], StageInteraction], *,
                 num_classes: int, stem: nn.Module, planes: int, zero_init_last_bn: bool, depth: int):
        super().__init__()
        self.depth = depth
        self.stem = stem
        inplanes, stages = planes, []
        for i, n in enumerate(layers):
            p = planes * 2 ** i
            stages.append(Stage(inplanes, p, n, 1 if i == 0 else 2, interaction))
            inplanes = p * Bottleneck.expansion
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        init_weights(self, zero_init_last_bn=zero_init_last_bn)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


IMAGENET_LAYERS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def cifar_resnet(depth: int, num_classes: int, interaction: Callable[[int, int], StageInteraction]) -> ResNet:
    n = (depth - 2) // 9
    return ResNet((n, n, n), interaction, num_classes=num_classes, stem=cifar_stem(), planes=16,
                  zero_init_last_bn=False, depth=depth)


def imagenet_resnet(depth: int, num_classes: int, interaction: Callable[[int, int], StageInteraction]) -> ResNet:
    return ResNet(IMAGENET_LAYERS[depth], interaction, num_classes=num_classes, stem=imagenet_stem(), planes=64,
                  zero_init_last_bn=True, depth=depth)
