"""Faster / Mask R-CNN with FPN on the zoo's ImageNet ResNets (any layer-interaction module).

The backbone is an ImageNet :class:`dlarepro.models.resnet.ResNet` without its classifier: the
outputs of its four stages (strides 4, 8, 16, 32; 256 to 2048 channels) feed torchvision's
feature pyramid (256 channels, plus a max-pooled P6), and torchvision's detection heads sit on
top. As in the official MMDetection setup, every BatchNorm of the backbone is frozen (statistics
and affine parameters) and the stem and the first stage are not trained.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..models import build_model
from ..models.resnet import ResNet
from .config import DETECTORS, PretrainedWeightsError, backbone_run

FPN_CHANNELS = 256


class ResNetFPN(nn.Module):
    """Stem and stages of an ImageNet ResNet followed by a feature pyramid; ``out_channels`` as
    torchvision's detectors expect."""

    def __init__(self, body: ResNet, trainable_stages: int = 3):
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        super().__init__()
        self.stem, self.stages = body.stem, body.stages
        widths = [stage.blocks[-1].conv3.out_channels for stage in self.stages]
        self.fpn = FeaturePyramidNetwork(widths, FPN_CHANNELS, extra_blocks=LastLevelMaxPool())
        self.out_channels = FPN_CHANNELS
        frozen = [self.stem, *list(self.stages)[: len(self.stages) - trainable_stages]]
        for module in frozen:
            module.requires_grad_(False)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        features: OrderedDict[str, Tensor] = OrderedDict()
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            features[str(i)] = x
        return self.fpn(features)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d below ``module`` by a FrozenBatchNorm2d with its statistics."""
    from torchvision.ops import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def pretrained_state(path: str | Path, arch: str, depth: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The ImageNet weights (classifier dropped) of a finished run folder or a checkpoint file,
    and what is known about them (path, synthetic flag, weights digest)."""
    from ..checkpoints import CorruptCheckpointError, read_checkpoint

    info = backbone_run(path, arch, depth)
    checkpoint = Path(info.pop("checkpoint"))  # metrics.json records the run folder
    try:
        payload = read_checkpoint(checkpoint)
    except CorruptCheckpointError as err:
        raise PretrainedWeightsError(f"pretrained backbone unusable: {err}") from None
    state = {k: v for k, v in payload["model"].items() if not k.startswith("fc.")}
    return state, info


def build_detector(detector: str, arch: str, depth: int, num_classes: int, *, min_size: int = 800,
                   max_size: int = 1333, trainable_stages: int = 3, pretrained: dict[str, Tensor] | None = None,
                   **knobs: Any) -> nn.Module:
    """A torchvision Faster / Mask R-CNN whose backbone is the zoo's ``arch``-``depth`` ImageNet
    ResNet (``pretrained``: its state dict without ``fc``), with ``num_classes`` including background."""
    from torchvision.models.detection import FasterRCNN, MaskRCNN

    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; choose one of {list(DETECTORS)}")
    body = build_model(arch, depth, "imagenet", **knobs)
    if pretrained is not None:
        missing, unexpected = body.load_state_dict(pretrained, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise PretrainedWeightsError(f"pretrained weights do not fit {arch}-{depth}: missing {missing[:5]}, "
                                         f"unexpected {unexpected[:5]}")
    backbone = ResNetFPN(freeze_batchnorm(body), trainable_stages)
    family = MaskRCNN if detector == "mask_rcnn" else FasterRCNN
    return family(backbone, num_classes=num_classes, min_size=min_size, max_size=max_size)
