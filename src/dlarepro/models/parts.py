"""Small building blocks shared by the layer-interaction methods and their fused tails: pooling,
channel convolutions, depthwise convolutions, per-head weights and drop-path."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def eca_kernel_size(channels: int) -> int:
    """ECA's adaptive kernel: the odd number nearest above (log2 C + 1) / 2."""
    t = int(abs((math.log2(channels) + 1) / 2))
    return t if t % 2 else t + 1


def gap(x: Tensor) -> Tensor:
    """Global average pool ``[B, C, H, W] -> [B, C]``.

    Written as a scaled sum: in channels-last layout the backward of ``mean`` (and of adaptive
    average pooling) materialises a full map and is ~10x slower than the broadcast of ``sum``.
    """
    return x.sum(dim=(2, 3)) * (1.0 / (x.shape[2] * x.shape[3]))


def as_map(v: Tensor) -> Tensor:
    """``[B, C] -> [B, C, 1, 1]`` so a per-channel vector scales a feature map."""
    return v[:, :, None, None]


def drop_mask(p: float, training: bool, like: Tensor) -> Tensor | None:
    """Drop-path's per-sample scale ``bernoulli(1 - p) / (1 - p)`` shaped ``[B, 1, ..., 1]``, or
    None when nothing is dropped. The reference module and the fused tails both draw through
    here, so the same random stream gives the same masks on either path."""
    if p == 0.0 or not training:
        return None
    keep = 1.0 - p
    mask = torch.empty((like.shape[0],) + (1,) * (like.ndim - 1), dtype=like.dtype, device=like.device)
    return mask.bernoulli_(keep).div_(keep)


class DropPath(nn.Module):
    """Stochastic depth on a residual branch: drop the whole branch per sample while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def mask(self, like: Tensor) -> Tensor | None:
        return drop_mask(self.p, self.training, like)

    def forward(self, x: Tensor) -> Tensor:
        mask = self.mask(x)
        return x if mask is None else x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ChannelConv(nn.Module):
    """A 1-D convolution across channels of a pooled vector (ECA, MRLA queries and keys)."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, v: Tensor) -> Tensor:  # [B, C] -> [B, C]
        return self.conv(v.unsqueeze(1)).squeeze(1)


def depthwise3x3(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)


def head_scores(q: Tensor, k: Tensor, heads: int) -> Tensor:
    """Per-head scaled dot products ``<q_h, k_h> / sqrt(d)`` of ``[..., B, C]`` tensors -> ``[..., B, heads]``."""
    prod = (q * k).unflatten(-1, (heads, -1))
    return prod.sum(-1) / math.sqrt(prod.shape[-1])


def per_channel(weights: Tensor, channels: int) -> Tensor:
    """Expand per-head weights ``[..., heads]`` to per-channel ``[..., C]``."""
    heads = weights.shape[-1]
    return weights.unsqueeze(-1).expand(*weights.shape, channels // heads).flatten(-2)
