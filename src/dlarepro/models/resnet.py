"""Bottleneck ResNets for CIFAR (depth 9n+2) and ImageNet (50/101) with a pluggable interaction.

Read top to bottom: the bottleneck block returns its two parts, a stage runs its blocks through the
stage's interaction (``interactions.py``), and the two networks differ only in stem, widths, depths
and initialisation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .interactions import INTERACTIONS, StageInteraction


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
    """``num_blocks`` bottlenecks (the first one strided) joined by one interaction."""

    def __init__(self, inplanes: int, planes: int, num_blocks: int, stride: int, interaction: str, **knobs: Any):
        super().__init__()
        width = planes * Bottleneck.expansion
        self.blocks = nn.ModuleList(
            Bottleneck(inplanes if i == 0 else width, planes, stride if i == 0 else 1) for i in range(num_blocks)
        )
        self.interaction: StageInteraction = INTERACTIONS[interaction](width, num_blocks, **knobs)

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


class CifarResNet(nn.Module):
    """CIFAR bottleneck ResNet: 3×3 stem (16), stages of 16/32/64 planes (widths 64/128/256),
    n = (depth − 2) / 9 blocks each, strides 1/2/2, global pool, linear head."""

    def __init__(self, depth: int, num_classes: int, interaction: str = "none", **knobs: Any):
        super().__init__()
        self.depth = depth
        n = (depth - 2) // 9
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        planes, inplanes, stages = (16, 32, 64), 16, []
        for i, p in enumerate(planes):
            stages.append(Stage(inplanes, p, n, 1 if i == 0 else 2, interaction, **knobs))
            inplanes = p * Bottleneck.expansion
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        init_weights(self, zero_init_last_bn=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


IMAGENET_LAYERS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class ImageNetResNet(nn.Module):
    """torchvision's ResNet-50/101 layout (7×7 stem, max-pool, stages of 64/128/256/512 planes,
    stride on the 3×3 conv) with an interaction in every stage."""

    def __init__(self, depth: int, num_classes: int = 1000, interaction: str = "none", **knobs: Any):
        super().__init__()
        self.depth = depth
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        inplanes, stages = 64, []
        for i, (p, n) in enumerate(zip((64, 128, 256, 512), IMAGENET_LAYERS[depth])):
            stages.append(Stage(inplanes, p, n, 1 if i == 0 else 2, interaction, **knobs))
            inplanes = p * Bottleneck.expansion
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        init_weights(self, zero_init_last_bn=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))
