"""The tails mode ``native`` for MRLA-B and DLA-B: C++ kernels (``resources/native/base_tail.cpp``,
``join.cpp``, built by :mod:`dlarepro.native`) behind autograd Functions, on the CPU.

* :class:`BaseJoin` and :class:`StencilBaseTail`: the join, one pass, and the base tail, with the
  block's value convolution ``V_t = DW(y)`` computed in its first pass; ``V_t``'s gradient (never
  written) is taken through the convolution and the join's ReLU in one pass that sums it over the
  blocks that read it and writes the branch's gradient (the join's backward);
* :func:`native_join_forward` / :func:`native_join_backward`: the join of :class:`.tails.Join`, one
  pass each.

They take what :func:`.native_tails.native_applies` accepts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from .. import native
from . import tail_kernels as k
from .native_tails import (address, addresses, check_result, kernel_suffix, norm_stats, per_image_coeffs, streamed,
                           weight_gradient)
from .parts import DropPath, stencil_taps
from .tail_kernels import update_running_stats


def native_base_forward(y, coeffs, gamma, beta, norm: nn.BatchNorm2d, mask, earlier, pool_newest: bool,
                        taps: Tensor):
    """The base tail's forward in C++, the newest value map being the depthwise convolution of ``y``
    with ``taps`` (``[9, C]``), computed inside after the ``earlier`` maps: the output, ``GAP`` of the
    newest map (or None), the attended map, the statistics batch norm used (the batch's in training,
    updating the running ones) and the newest map."""
    b, c, h, w = y.shape
    dtype = y.dtype
    co = per_image_coeffs(coeffs, dtype)
    gamma1, beta1 = gamma.detach().to(dtype).contiguous(), beta.detach().to(dtype).contiguous()
    mask1 = None if mask is None else mask.reshape(b).to(dtype).contiguous()
    attended, out = torch.empty_like(y), torch.empty_like(y)
    values = [*earlier, torch.empty_like(y)]
    mean, var, rstd = norm_stats(norm, y)
    pooled = y.new_empty(b, c) if pool_newest else None
    code = getattr(native.library(), f"base_tail_forward_{kernel_suffix(y)}")(
        addresses(values), len(values), taps.data_ptr(), co.data_ptr(), y.data_ptr(), gamma1.data_ptr(),
        beta1.data_ptr(), address(mask1), norm.eps, b, c, h, w, attended.data_ptr(), out.data_ptr(), mean.data_ptr(),
        var.data_ptr(), rstd.data_ptr(), address(pooled), int(not norm.training), torch.get_num_threads())
    check_result(code, "base tail", y)
    # pass 1: y and the earlier maps read, V_t and a written (in eval also out); pass 2 (training): a and y
    # read, out written
    streamed(y, *earlier, values[-1], attended, *((attended, y) if norm.training else ()), out)
    if norm.training:
        update_running_stats(norm, mean, var, b * h * w)
    return out, pooled, attended, mean, rstd, values[-1]


def native_value_gradient(maps: list[Tensor], coeffs: Tensor, extra: Tensor | None, y: Tensor, taps: Tensor,
                          grad_y: Tensor | None, grad_pooled_y: Tensor | None = None,
                          relu: bool = False) -> tuple[Tensor, Tensor]:
    """A value map's gradient ``extra + Σ_i coeffs[i] ⊙ maps[i]`` taken through its depthwise
    convolution of ``y`` (``taps`` ``[9, C]``) without being written: ``grad_y +`` the convolution's
    input gradient, and the taps' gradient ``[9, C]``. With ``relu`` (``y = ReLU(branch + s)``), the
    branch's gradient instead: that sum plus ``grad_pooled_y / P`` (``GAP(y)``'s share) where
    ``y > 0``, else 0 (the join's backward in the same pass)."""
    b, c, h, w = y.shape
    co = per_image_coeffs(coeffs, y.dtype)
    as_vector = lambda t: None if t is None else t.detach().reshape(b, c).to(y.dtype).contiguous()
    extra1, gpy = as_vector(extra), as_vector(grad_pooled_y)
    go = None if grad_y is None else grad_y.to(y.dtype).contiguous(memory_format=torch.channels_last)
    out, grad_taps = torch.empty_like(y), y.new_empty(9, c)
    code = getattr(native.library(), f"value_gradient_stencil_{kernel_suffix(y)}")(
        addresses(maps), len(maps), co.data_ptr(), address(extra1), y.data_ptr(), taps.data_ptr(), address(go),
        address(gpy),
        int(relu), b, c, h, w, out.data_ptr(), grad_taps.data_ptr(), torch.get_num_threads())
    check_result(code, "value gradient", y)
    streamed(*maps, y, go, out)
    return out, grad_taps


def native_base_backward(grad_out, attended, coeffs, gamma, beta, mean, rstd, mask, values, training: bool):
    """The base tail's backward in C++: the attended map's gradient, the coefficients' (its sums
    against every map), gamma's and beta's."""
    b, c, h, w = attended.shape
    dtype = attended.dtype
    go = grad_out.to(dtype).contiguous(memory_format=torch.channels_last)
    gamma1, beta1 = gamma.detach().to(dtype).contiguous(), beta.detach().to(dtype).contiguous()
    mask1 = None if mask is None else mask.reshape(b).to(dtype).contiguous()
    ga = torch.empty_like(attended)
    grad_coeffs, grad_gamma, grad_beta = attended.new_empty(len(values), b, c), attended.new_empty(c), \
        attended.new_empty(c)
    code = getattr(native.library(), f"base_tail_backward_{kernel_suffix(attended)}")(
        go.data_ptr(), attended.data_ptr(), addresses(values), len(values), gamma1.data_ptr(), beta1.data_ptr(),
        mean.data_ptr(), rstd.data_ptr(), address(mask1), int(training), b, c, h * w, ga.data_ptr(),
        grad_coeffs.data_ptr(), grad_gamma.data_ptr(), grad_beta.data_ptr(), torch.get_num_threads())
    check_result(code, "base tail backward", attended)
    # pass 1: the output gradient and a read; pass 2: them again and every map, a's gradient written
    streamed(go, attended, go, attended, *values, ga)
    return (ga, grad_coeffs.reshape(coeffs.shape).to(coeffs.dtype), grad_gamma.to(gamma.dtype),
            grad_beta.to(beta.dtype))


def native_join_forward(branch: Tensor, shortcut: Tensor, pool_shortcut: bool):
    """:func:`.tail_kernels.join_forward` in C++ (``resources/native/join.cpp``), one pass."""
    b, c, h, w = branch.shape
    y, pooled_y = torch.empty_like(branch), branch.new_empty(b, c)
    pooled_s = branch.new_empty(b, c) if pool_shortcut else None
    code = getattr(native.library(), f"join_forward_{kernel_suffix(branch)}")(
        branch.data_ptr(), shortcut.data_ptr(), b, c, h * w, y.data_ptr(), pooled_y.data_ptr(), address(pooled_s),
        torch.get_num_threads())
    check_result(code, "join", branch)
    streamed(branch, shortcut, y)
    return y, pooled_y, pooled_s


def native_join_backward(grad_y: Tensor, y: Tensor, grad_pooled_y: Tensor | None, grad_pooled_s: Tensor | None,
                         grad_y_other: Tensor | None, grad_s_others: tuple[Tensor | None, ...]):
    """:func:`.tail_kernels.join_backward` in C++, one pass."""
    b, c, h, w = y.shape
    as_map = lambda t: None if t is None else t.to(y.dtype).contiguous(memory_format=torch.channels_last)
    as_vector = lambda t: None if t is None else t.to(y.dtype).reshape(b, c).contiguous()
    others = [as_map(t) for t in grad_s_others if t is not None]
    gy, gyo, gpy, gps = as_map(grad_y), as_map(grad_y_other), as_vector(grad_pooled_y), as_vector(grad_pooled_s)
    grad_branch = torch.empty_like(y)
    grad_shortcut = torch.empty_like(y) if gps is not None or others else None
    code = getattr(native.library(), f"join_backward_{kernel_suffix(y)}")(
        gy.data_ptr(), address(gyo), y.data_ptr(), address(gpy), address(gps), addresses(others), len(others), b, c,
        h * w,
        grad_branch.data_ptr(), address(grad_shortcut), torch.get_num_threads())
    check_result(code, "join backward", y)
    streamed(gy, gyo, y, *others, grad_branch, grad_shortcut)
    return grad_branch, grad_branch if grad_shortcut is None else grad_shortcut


class BaseBlock:
    """One B block's native state, from :class:`BaseJoin` to :class:`StencilBaseTail` and back: the
    value convolution's taps, and what the tail's backward leaves for the join's (the map pass)."""

    taps: Tensor
    pending: tuple | None = None  # (grad_out, the maps and weights of V_t's gradient, its per-channel extra)


class BaseJoin(Function):
    """The join of a native B block, ``y = ReLU(branch + s)`` and ``GAP(y)`` in one pass; its backward
    is the block's map pass: the gradient of ``V_t = DW(y)`` (summed over the blocks that read it, as
    :class:`StencilBaseTail`'s backward left it in ``block``) through the value convolution, plus the
    residual's and ``GAP(y)``'s, through the ReLU: the branch's and the shortcut's gradient and the
    convolution weight's, in one pass (``y``'s own gradient is never written). Autograd runs it after
    the tail's backward, the tail reading ``y``."""

    @staticmethod
    def forward(ctx, branch, shortcut, value_weight, block: BaseBlock):
        y, pooled_y, _ = native_join_forward(branch, shortcut, False)
        block.taps = stencil_taps(value_weight.detach().to(y.dtype))
        ctx.save_for_backward(y)
        ctx.block, ctx.weight = block, (value_weight.shape, value_weight.dtype)
        ctx.set_materialize_grads(False)
        return y, pooled_y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, grad_pooled_y):
        (y,) = ctx.saved_tensors
        block = ctx.block
        pending, block.pending = block.pending, None
        if pending is None:  # the tail's output was not differentiated: V_t's gradient is zero
            go, maps, weights, extra = grad_y, [], y.new_empty(0, y.shape[0], y.shape[1]), None
        else:
            go, maps, weights, extra = pending
            if grad_y is not None:  # y read by something besides the tail
                go = go + grad_y
        grad_branch, grad_taps = native_value_gradient(maps, weights, extra, y, block.taps, go, grad_pooled_y,
                                                       relu=True)
        shape, dtype = ctx.weight
        return grad_branch, grad_branch, weight_gradient(grad_taps, shape, dtype), None


def base_join(branch: Tensor, shortcut: Tensor, value_weight: Tensor) -> tuple[BaseBlock, Tensor, Tensor]:
    """The join of a native B block (check :func:`native_applies` on ``branch``, ``shortcut`` and the
    stage's value maps first): ``(block, y, GAP(y))``; hand ``block`` to :func:`stencil_base_tail`."""
    block = BaseBlock()
    y, pooled = BaseJoin.apply(branch, shortcut, value_weight, block)
    return block, y, pooled


class StencilBaseTail(Function):
    """The native :class:`.tails.BaseTail` whose newest value map ``V_t`` is the block's depthwise value
    convolution of ``y``, computed inside the first pass (C++), and whose gradient goes through that
    convolution in the pass that sums it, without being written (the library's convolution, forward
    and backward, spared). Takes ``y``, the convolution's weight and the stage's earlier maps;
    returns ``(out, V_t)``, with ``GAP(V_t)`` when ``pool_newest``. Needs the stage's
    :class:`.tails.ValueGradients`: later blocks hand ``V_t``'s gradient there, not to autograd.
    With the ``block`` of a :class:`BaseJoin`, that pass is the join's backward (which then returns
    ``y``'s and the weight's gradients); without, it runs here."""

    @staticmethod
    def forward(ctx, y, value_weight, coeffs, gamma, beta, norm: nn.BatchNorm2d, mask, value_grads,
                pool_newest: bool, block: BaseBlock | None, *earlier):
        taps = block.taps if block is not None else stencil_taps(value_weight.detach().to(y.dtype))
        out, pooled, attended, mean, rstd, value = native_base_forward(y, coeffs, gamma, beta, norm, mask, earlier,
                                                                       pool_newest, taps)
        ctx.save_for_backward(y, taps, attended, coeffs, gamma, beta, mean, rstd, mask, *earlier, value)
        ctx.training, ctx.value_grads, ctx.weight = norm.training, value_grads, (value_weight.shape, value_weight.dtype)
        ctx.block = block
        ctx.set_materialize_grads(False)
        return (out, value, pooled) if pool_newest else (out, value)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_value, *grad_pooled):
        y, taps, attended, coeffs, gamma, beta, mean, rstd, mask, *values = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(y)
        ga, grad_coeffs, grad_gamma, grad_beta = native_base_backward(grad_out, attended, coeffs, gamma, beta, mean,
                                                                      rstd, mask, values, ctx.training)
        maps, weights = ctx.value_grads.readers(ga, coeffs)
        if grad_value is not None:  # V_t differentiated through directly: one more term of its sum
            maps, weights = [*maps, grad_value.to(y.dtype).contiguous(memory_format=torch.channels_last)], \
                torch.cat([weights, torch.ones_like(weights[:1])])
        pooled_grad = grad_pooled[0] if grad_pooled else None
        extra = None if pooled_grad is None else pooled_grad[:, :, None, None] * (1.0 / k.spatial(y))
        rest = (grad_coeffs, grad_gamma, grad_beta, None, None, None, None, None, *([None] * (len(values) - 1)))
        if ctx.block is not None:  # the join's backward makes the map pass
            ctx.block.pending = (grad_out, maps, weights, extra)
            return (None, None, *rest)
        grad_y, grad_taps = native_value_gradient(maps, weights, extra, y, taps, grad_out)
        shape, dtype = ctx.weight
        return (grad_y, weight_gradient(grad_taps, shape, dtype), *rest)


def stencil_base_tail(y: Tensor, value_weight: Tensor, earlier: list[Tensor], coeffs: Tensor, norm: nn.BatchNorm2d,
                      drop_path: DropPath, value_grads, pool_newest: bool = False, block: BaseBlock | None = None):
    """:func:`.tails.base_tail` with the block's value convolution inside (:class:`StencilBaseTail`; check
    :func:`native_applies` on ``y`` and ``earlier`` first): ``(out, V_t)`` or ``(out, V_t, GAP(V_t))``;
    ``block``: from :func:`base_join` (``y`` its output), whose backward then makes the map pass."""
    return StencilBaseTail.apply(y, value_weight, coeffs[..., None, None], norm.weight, norm.bias, norm,
                                 drop_path.mask(y), value_grads, pool_newest, block, *earlier)
