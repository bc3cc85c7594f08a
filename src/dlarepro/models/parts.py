"""Small building blocks shared by the layer-interaction methods and their fused tails: pooling,
channel convolutions, depthwise convolutions, per-head weights and drop-path."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable


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


class ChannelConvFunction(Function):
    """A bias-free, zero-padded odd-``k`` 1-D convolution across the last dimension of ``v`` as ``k``
    shifted multiply-adds, with the backward written out.

    Same arithmetic as ``conv1d(v.unsqueeze(1), weight, padding=(k - 1) // 2)``, but the library's
    convolution treats a ``[B, 1, C]`` vector like an image: at ``C = 256`` its forward + backward
    takes ~1.8 ms on 2 CPU threads against ~0.26 ms here. A MRLA/DLA block calls it twice (query and
    key): ~32 ms of a MRLA-L-56 training step before, ~21 ms now (profiled on that CPU).
    """

    @staticmethod
    def forward(ctx, v: Tensor, weight: Tensor) -> Tensor:
        taps, pad, width = weight.reshape(-1), (weight.shape[-1] - 1) // 2, v.shape[-1]
        padded = F.pad(v, (pad, pad))
        out = padded[..., :width] * taps[0]
        for j in range(1, taps.numel()):
            out.addcmul_(padded[..., j:j + width], taps[j])
        ctx.save_for_backward(padded, taps)
        ctx.weight_shape = weight.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        padded, taps = ctx.saved_tensors
        k, width = taps.numel(), grad.shape[-1]
        grad_v = None
        if ctx.needs_input_grad[0]:  # the same convolution with the taps reversed
            grad_padded = F.pad(grad, ((k - 1) // 2, (k - 1) // 2))
            grad_v = grad_padded[..., k - 1:k - 1 + width] * taps[0]
            for j in range(1, k):
                grad_v.addcmul_(grad_padded[..., k - 1 - j:k - 1 - j + width], taps[j])
        # tap j saw the input shifted by j: its gradient is that shift's dot product with grad
        grad_w = torch.stack([(padded[..., j:j + width] * grad).sum(dtype=taps.dtype) for j in range(k)])
        return grad_v, grad_w.reshape(ctx.weight_shape)


def channel_conv(v: Tensor, weight: Tensor) -> Tensor:
    """``[..., C] -> [..., C]``: ``weight`` ``[1, 1, k]`` slid across the channels, zero-padded."""
    if weight.shape[-1] % 2 == 0:
        raise ValueError(f"channel_conv needs an odd kernel size, got {weight.shape[-1]}")
    return ChannelConvFunction.apply(v, weight)


class ChannelConv(nn.Module):
    """A 1-D convolution across channels of a pooled vector (ECA, MRLA queries and keys).

    The weight lives in an ``nn.Conv1d`` (``conv.weight``, ``[1, 1, k]``: the official models'
    layout, so checkpoints map one to one); the forward runs :func:`channel_conv`."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, v: Tensor) -> Tensor:  # [B, C] -> [B, C]
        return channel_conv(v, self.conv.weight)


def depthwise3x3(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)


def stencil_taps(weight: Tensor) -> Tensor:
    """``[C, 1, 3, 3]`` depthwise weights as ``[9, C]`` taps (tap-major: each tap's channel vector is
    contiguous, as the stencil kernels read them)."""
    return weight.reshape(weight.shape[0], 9).t().contiguous()


def head_scores(q: Tensor, k: Tensor, heads: int) -> Tensor:
    """Per-head scaled dot products ``<q_h, k_h> / sqrt(d)`` of ``[..., B, C]`` tensors -> ``[..., B, heads]``."""
    prod = (q * k).unflatten(-1, (heads, -1))
    return prod.sum(-1) / math.sqrt(prod.shape[-1])


def per_channel(weights: Tensor, channels: int) -> Tensor:
    """Expand per-head weights ``[..., heads]`` to per-channel ``[..., C]``."""
    heads = weights.shape[-1]
    return weights.unsqueeze(-1).expand(*weights.shape, channels // heads).flatten(-2)
