"""Fused layer-attention tails: every full-map step of a block after its last convolution, in as
few passes over memory as the arithmetic needs, with the backward written out.

A block of MRLA/DLA ends in a chain of element-wise steps on full feature maps: ``ReLU(branch +
shortcut)``, pooling, scaling by attention, ``λ ⊙ shortcut`` (DLA-L: the refreshed shortcut
``s ⊙ g + DW(s)``), batch norm, drop-path and the residual sum. Run op by op, each step reads and
writes whole maps, forward and backward, and together they cost more than the extra convolutions
(the README's profile). Here the chain is three autograd Functions around the convolutions:

* :class:`Join`: ``y = ReLU(branch + s)`` with ``GAP(y)`` (and ``GAP(s)`` for DLA-L) in one kernel
  (on the CPU inductor still reads ``y`` and ``s`` again for the pools: README, benchmark);
  its backward also sums the gradients of every consumer of ``y`` and of ``s``;
* :class:`LightTail` (MRLA-L, DLA-L): ``y + mask ⊙ BN(alpha ⊙ s + w ⊙ DW(y) [+ DW_{λW}(s)])``;
* :class:`BaseTail` (MRLA-B, DLA-B): ``y + mask ⊙ ReLU(BN(Σ_i c_i ⊙ V_i))``; the gradient of
  each cached ``V_i`` is summed over the blocks that read it in one pass (:class:`ValueGradients`);
* :class:`StencilLightTail` (mode ``native``, CPU): the light tail with its depthwise convolutions
  ``DW(y)`` and ``DW_{λW}(s)`` computed inside the passes by a C++ kernel (:mod:`dlarepro.native`),
  so those maps and their gradients are never written;
* :class:`StencilBaseTail` (mode ``native``, CPU): the base tail in C++, with the block's value
  convolution ``V_t = DW(y)`` computed in its first pass and ``V_t``'s gradient taken through it in
  the pass that sums it (never written).

Batch norm is folded into the tails (batch statistics, running-statistics update, backward), so
neither its input nor its output is kept for backward: what the tails save are maps that exist
anyway. The convolutions and the small per-channel computations (queries, keys, the DSU cell)
stay ordinary autograd. The arithmetic lives in :mod:`.tail_kernels`.

Which path runs (per interaction module, ``set_tails``: a run applies its ``tails`` switch; a model
built outside a run, as in tests and the benchmark, follows ``DLAREPRO_TAILS``):
``reference`` the original module code, op by op; ``compiled`` the Functions with kernels fused by
``torch.compile``; ``eager`` the Functions with their kernels op by op (slower than the reference:
it exists to test and to fall back on); ``native``: the join, every method's tail and its
depthwise convolutions (value, DLA-L's refresh) in C++ (:mod:`dlarepro.native`; built with g++ in
about a second, no inductor) where they apply (CPU, float32 or float64, channels-last, channels a
multiple of 16), ``compiled`` elsewhere; ``auto`` (default): ``compiled`` on CUDA, ``native`` on
the CPU where it applies, the reference elsewhere (NCHW or 16-bit maps, no C++ compiler, inside a
whole-model compile). On the CPU ``native`` is the fastest path and starts at once; ``compiled``
costs ~20 s of compiling per process. Where compilation fails (no Triton, no C++ compiler)
``auto`` falls back to the reference. Tests check that every path gives the same outputs and
gradients.
"""

from __future__ import annotations

import ctypes
import logging
import os
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from .. import native
from ..runconfig import TAIL_MODES as MODES
from . import tail_kernels as k
from .parts import DropPath, gap, stencil_taps

ENV_VAR = "DLAREPRO_TAILS"
log = logging.getLogger(__name__)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown tails mode {mode!r}; choose one of {list(MODES)}")
    return mode


def default_mode() -> str:
    """The mode named by ``DLAREPRO_TAILS`` (``auto`` when unset)."""
    value = os.environ.get(ENV_VAR, "auto")
    if value not in MODES:
        raise ValueError(f"{ENV_VAR}={value!r} is not one of {list(MODES)}")
    return value


def set_tails(model: nn.Module, mode: str | None) -> nn.Module:
    """Run every layer-attention tail of ``model`` in ``mode`` (None: follow ``DLAREPRO_TAILS``)."""
    if mode is not None:
        check_mode(mode)
    for module in model.modules():
        if hasattr(module, "tails_mode"):
            module.tails_mode = mode
    return model


def flavour(mode: str | None, x: Tensor, norm: nn.BatchNorm2d) -> str | None:
    """The kernel flavour a tail runs with, or None for the reference path (also where the fused
    tails do not apply: a BN without affine parameters or running statistics). The written-out
    backward is not itself differentiable: a second derivative raises (``once_differentiable``)."""
    mode = mode or default_mode()
    if mode == "reference" or not (norm.affine and norm.track_running_stats):
        return None
    if mode == "auto":
        if x.is_cuda:
            return None if k.Kernel.failed else "compiled"
        return "native" if native_applies(x) else None  # no compiler: the reference
    return mode


def update_running_stats(norm: nn.BatchNorm2d, mean: Tensor, var: Tensor, count: int) -> None:
    """What ``nn.BatchNorm2d`` does in training: ``num_batches_tracked`` += 1 and running averages
    of the batch mean and the unbiased batch variance."""
    with torch.no_grad():
        norm.num_batches_tracked.add_(1)
        factor = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
        norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), factor)
        unbiased = var * (count / max(count - 1, 1))
        norm.running_var.lerp_(unbiased.to(norm.running_var.dtype), factor)


def eval_stats(norm: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Running mean and 1/sqrt(running var + eps), copied: later training steps update the buffers
    in place while a backward may still need these."""
    return norm.running_mean.clone(), torch.rsqrt(norm.running_var + norm.eps)


class Join(Function):
    """``y = ReLU(branch + s)``, ``GAP(y)`` and optionally ``GAP(s)``; also a second handle on ``y``
    (for the value convolution) and ``shortcut_handles`` handles on the shortcut (for its other
    consumers).

    A map read by several consumers gets their gradients summed by autograd, one full-map ``add_``
    per extra consumer, before its producer's backward runs. Giving each consumer its own handle
    (the same memory: views, nothing is copied) makes their gradients arrive here separately, and
    :func:`.tail_kernels.join_backward` adds them inside the pass it makes anyway.
    """

    @staticmethod
    def forward(ctx, branch, shortcut, pool_shortcut: bool, shortcut_handles: int, flavour: str):
        if flavour == "native" and native_applies(branch, shortcut):
            y, pooled_y, pooled_s = native_join_forward(branch, shortcut, pool_shortcut)
        else:
            flavour = "compiled" if flavour == "native" else flavour
            y, pooled_y, pooled_s = k.JOIN_FORWARD(flavour, branch, shortcut, pool_shortcut)
        ctx.save_for_backward(y)
        ctx.flavour, ctx.pool_shortcut = flavour, pool_shortcut
        ctx.set_materialize_grads(False)
        pooled = (pooled_y, pooled_s) if pool_shortcut else (pooled_y,)
        return (y, y.view_as(y)) + pooled + tuple(shortcut.view_as(shortcut) for _ in range(shortcut_handles))

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        (y,) = ctx.saved_tensors
        grad_y, grad_y_other, grad_pooled_y, *grads = grads
        grad_pooled_s = grads.pop(0) if ctx.pool_shortcut else None
        if grad_y is None:  # a handle nobody differentiated through
            grad_y, grad_y_other = grad_y_other, None
        if grad_y is None:
            grad_y = torch.zeros_like(y)
        if ctx.flavour == "native":
            grad_branch, grad_shortcut = native_join_backward(grad_y, y, grad_pooled_y, grad_pooled_s, grad_y_other,
                                                              tuple(grads))
        else:
            grad_branch, grad_shortcut = k.JOIN_BACKWARD(ctx.flavour, grad_y, y, grad_pooled_y, grad_pooled_s,
                                                         grad_y_other, tuple(grads))
        return grad_branch, grad_shortcut, None, None, None


class Joined(NamedTuple):
    """What :func:`join` returns: ``y`` for the tail and ``y_value`` for the value convolution
    (one map, two handles), the pooled vectors, and one handle on the shortcut per extra consumer."""

    y: Tensor
    y_value: Tensor
    pooled_y: Tensor
    pooled_s: Tensor | None
    shortcuts: tuple[Tensor, ...]


def join(branch: Tensor, shortcut: Tensor, flavour: str, pool_shortcut: bool = False,
         shortcut_handles: int = 0) -> Joined:
    """``ReLU(branch + shortcut)`` and its pooling, with ``GAP(shortcut)`` when ``pool_shortcut``;
    ``shortcut_handles`` handles on ``shortcut`` for the tail's (and the refresh's) use of it."""
    out = Join.apply(branch, shortcut, pool_shortcut, shortcut_handles, flavour)
    y, y_value, pooled_y = out[:3]
    pooled_s = out[3] if pool_shortcut else None
    return Joined(y, y_value, pooled_y, pooled_s, tuple(out[4 if pool_shortcut else 3:]))


class LightTail(Function):
    """``y + mask ⊙ BN(alpha ⊙ s + w ⊙ v [+ r])``; returns the gradient of every map and vector."""

    @staticmethod
    def forward(ctx, y, s, v, r, w, alpha, gamma, beta, norm: nn.BatchNorm2d, mask, flavour: str):
        if norm.training:
            out, mean, var, rstd = k.LIGHT_TRAIN(flavour, y, s, v, r, w, alpha, gamma, beta, mask, norm.eps)
            update_running_stats(norm, mean, var, y.shape[0] * k.spatial(y))
        else:
            mean, rstd = eval_stats(norm)
            out = k.LIGHT_EVAL(flavour, y, s, v, r, w, alpha, gamma, beta, mean, rstd)
        ctx.save_for_backward(s, v, r, w, alpha, gamma, mean, rstd, mask)
        ctx.flavour, ctx.training = flavour, norm.training
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        s, v, r, w, alpha, gamma, mean, rstd, mask = ctx.saved_tensors
        grad_s, grad_v, grad_r, grad_w, grad_alpha, grad_gamma, grad_beta = k.LIGHT_BACKWARD(
            ctx.flavour, grad_out, s, v, r, w, alpha, gamma, mean, rstd, mask, ctx.training)
        return (grad_out, grad_s, grad_v, grad_r, grad_w.sum_to_size(w.shape).to(w.dtype),
                grad_alpha.sum_to_size(alpha.shape).to(alpha.dtype), grad_gamma.to(gamma.dtype),
                grad_beta.to(gamma.dtype), None, None, None)


class StencilLightTail(Function):
    """``y + mask ⊙ BN(alpha ⊙ s + w ⊙ DW_value(y) [+ DW_refresh(s)])``, the depthwise convolutions
    inside (:mod:`dlarepro.native`); returns the gradient of every input, ``y``'s with the value
    convolution's share and the residual's, ``s``'s with the refresh convolution's."""

    @staticmethod
    def forward(ctx, y, s, value_weight, refresh_weight, w, alpha, gamma, beta, norm: nn.BatchNorm2d, mask):
        b, c, h, wd = y.shape
        dtype, suffix = y.dtype, "f32" if y.dtype == torch.float32 else "f64"
        taps = lambda weight: stencil_taps(weight.detach().to(dtype))
        kv, kr = taps(value_weight), None if refresh_weight is None else taps(refresh_weight)
        w2, alpha2 = w.detach().reshape(b, c).to(dtype).contiguous(), alpha.detach().reshape(-1, c).to(dtype).contiguous()
        gamma1, beta1 = gamma.detach().to(dtype).contiguous(), beta.detach().to(dtype).contiguous()
        mask1 = None if mask is None else mask.reshape(b).to(dtype).contiguous()
        out = torch.empty_like(y)
        if norm.training:
            mean, var, rstd = (y.new_empty(c) for _ in range(3))
        else:
            mean, rstd = (t.to(dtype).contiguous() for t in eval_stats(norm))
            var = mean  # not written in eval
        code = getattr(native.library(), f"stencil_tail_forward_{suffix}")(
            y.data_ptr(), s.data_ptr(), kv.data_ptr(), _ptr(kr), w2.data_ptr(), alpha2.data_ptr(),
            int(alpha2.shape[0] == b), gamma1.data_ptr(), beta1.data_ptr(), _ptr(mask1), norm.eps, b, c, h, wd,
            out.data_ptr(), mean.data_ptr(), var.data_ptr(), rstd.data_ptr(), int(not norm.training),
            torch.get_num_threads())
        if code != 0:
            raise RuntimeError(f"native light tail failed ({code}) on maps of shape {tuple(y.shape)}")
        if norm.training:
            update_running_stats(norm, mean, var, b * h * wd)
        ctx.save_for_backward(y, s, kv, kr, w2, alpha2, gamma1, mean, rstd, mask1)
        ctx.shapes = value_weight.shape, alpha.shape, w.shape
        ctx.training, ctx.suffix = norm.training, suffix
        ctx.param_dtypes = value_weight.dtype, None if refresh_weight is None else refresh_weight.dtype, w.dtype, \
            alpha.dtype, gamma.dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        y, s, kv, kr, w2, alpha2, gamma1, mean, rstd, mask1 = ctx.saved_tensors
        b, c, h, wd = y.shape
        go = grad_out.to(y.dtype).contiguous(memory_format=torch.channels_last)
        grad_y, grad_s = torch.empty_like(y), torch.empty_like(s)
        new = lambda *shape: y.new_empty(shape)
        grad_w, grad_alpha, grad_kv, grad_kr, grad_gamma, grad_beta = new(b, c), new(b, c), new(9, c), new(9, c), \
            new(c), new(c)
        code = getattr(native.library(), f"stencil_tail_backward_{ctx.suffix}")(
            go.data_ptr(), y.data_ptr(), s.data_ptr(), kv.data_ptr(), _ptr(kr), w2.data_ptr(), alpha2.data_ptr(),
            int(alpha2.shape[0] == b), gamma1.data_ptr(), mean.data_ptr(), rstd.data_ptr(), _ptr(mask1),
            int(ctx.training), b, c, h, wd, grad_y.data_ptr(), grad_s.data_ptr(), grad_w.data_ptr(),
            grad_alpha.data_ptr(), grad_kv.data_ptr(), grad_kr.data_ptr(), grad_gamma.data_ptr(), grad_beta.data_ptr(),
            torch.get_num_threads())
        if code != 0:
            raise RuntimeError(f"native light tail backward failed ({code}) on maps of shape {tuple(y.shape)}")
        weight_shape, alpha_shape, w_shape = ctx.shapes
        value_dtype, refresh_dtype, w_dtype, alpha_dtype, gamma_dtype = ctx.param_dtypes
        as_weight = lambda g, dtype: g.t().reshape(weight_shape).to(dtype)
        if alpha_shape[0] == 1:
            grad_alpha = grad_alpha.sum(0, keepdim=True)
        return (grad_y, grad_s, as_weight(grad_kv, value_dtype),
                None if kr is None else as_weight(grad_kr, refresh_dtype), grad_w.reshape(w_shape).to(w_dtype),
                grad_alpha.reshape(alpha_shape).to(alpha_dtype), grad_gamma.to(gamma_dtype),
                grad_beta.to(gamma_dtype), None, None)


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


#: set once the native kernel failed to build: the light tails use the compiled kernels from then on
native_failed = False


def native_applies(*maps: Tensor) -> bool:
    """Whether the native kernels (:class:`StencilLightTail`, the native :class:`BaseTail`) can take
    these maps: CPU, float32 or float64 alike, channels-last, channels a multiple of 16, outside a
    whole-model compile, and the kernels build here; if the build fails, logs why once and answers
    no from then on."""
    global native_failed
    if native_failed or torch.compiler.is_compiling():
        return False
    first = maps[0]
    if not (first.device.type == "cpu" and first.dtype in (torch.float32, torch.float64) and first.dim() == 4
            and first.shape[1] % 16 == 0
            and all(m.dtype == first.dtype and m.device == first.device and m.shape == first.shape
                    and m.is_contiguous(memory_format=torch.channels_last) for m in maps)):
        return False
    try:
        native.library()
    except (native.BuildError, OSError) as error:
        native_failed = True
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        log.warning("the native tails are not available (%s); running the compiled ones", first_line)
        return False
    return True


def stencil_light_tail(y: Tensor, shortcut: Tensor, value_weight: Tensor, weights: Tensor, alpha: Tensor,
                       norm: nn.BatchNorm2d, drop_path: DropPath, refresh_weight: Tensor | None = None) -> Tensor:
    """:func:`light_tail` with the value convolution (``value_weight``) and DLA-L's refresh
    convolution (``refresh_weight``, λ folded in) inside; check :func:`native_applies` first."""
    mask = drop_path.mask(y)
    return StencilLightTail.apply(y, shortcut, value_weight, refresh_weight, weights, alpha, norm.weight, norm.bias,
                                  norm, mask)


def light_tail(y: Tensor, shortcut: Tensor, value: Tensor, weights: Tensor, alpha: Tensor, norm: nn.BatchNorm2d,
               drop_path: DropPath, flavour: str, refreshed: Tensor | None = None) -> Tensor:
    """MRLA-L / DLA-L after the convolutions: ``weights`` ``[B, C, 1, 1]`` scale the value map,
    ``alpha`` (``[1 or B, C, 1, 1]``) the shortcut; ``refreshed`` is DLA-L's ``DW_{λW}(s)``."""
    mask = drop_path.mask(y)
    return LightTail.apply(y, shortcut, value, refreshed, weights, alpha, norm.weight, norm.bias, norm, mask, flavour)


def _pointers(maps) -> ctypes.Array:
    return (ctypes.c_void_p * len(maps))(*(m.data_ptr() for m in maps))


def _per_image(coeffs: Tensor, dtype: torch.dtype) -> Tensor:
    """Coefficients ``[t, B, C, 1, 1]`` (or ``[t, B, C]``) as the native kernels take them."""
    return coeffs.detach().reshape(coeffs.shape[0], coeffs.shape[1], coeffs.shape[2]).to(dtype).contiguous()


def native_base_forward(y, coeffs, gamma, beta, norm: nn.BatchNorm2d, mask, earlier, pool_newest: bool,
                        taps: Tensor):
    """The base tail's forward in C++, the newest value map being the depthwise convolution of ``y``
    with ``taps`` (``[9, C]``), computed inside after the ``earlier`` maps: the output, ``GAP`` of the
    newest map (or None), the attended map, the statistics batch norm used (the batch's in training,
    updating the running ones) and the newest map."""
    b, c, h, w = y.shape
    dtype = y.dtype
    co = _per_image(coeffs, dtype)
    gamma1, beta1 = gamma.detach().to(dtype).contiguous(), beta.detach().to(dtype).contiguous()
    mask1 = None if mask is None else mask.reshape(b).to(dtype).contiguous()
    attended, out = torch.empty_like(y), torch.empty_like(y)
    values = [*earlier, torch.empty_like(y)]
    if norm.training:
        mean, var, rstd = (y.new_empty(c) for _ in range(3))
    else:
        mean, rstd = (t.to(dtype).contiguous() for t in eval_stats(norm))
        var = mean  # not written in eval
    pooled = y.new_empty(b, c) if pool_newest else None
    code = getattr(native.library(), f"base_tail_forward_{_suffix(y)}")(
        _pointers(values), len(values), taps.data_ptr(), co.data_ptr(), y.data_ptr(), gamma1.data_ptr(), beta1.data_ptr(),
        _ptr(mask1), norm.eps, b, c, h, w, attended.data_ptr(), out.data_ptr(), mean.data_ptr(), var.data_ptr(),
        rstd.data_ptr(), _ptr(pooled), int(not norm.training), torch.get_num_threads())
    _check(code, "base tail", y)
    if norm.training:
        update_running_stats(norm, mean, var, b * h * w)
    return out, pooled, attended, mean, rstd, values[-1]


def native_value_gradient(maps: list[Tensor], coeffs: Tensor, extra: Tensor | None, y: Tensor, taps: Tensor,
                          grad_y: Tensor) -> tuple[Tensor, Tensor]:
    """A value map's gradient ``extra + Σ_i coeffs[i] ⊙ maps[i]`` taken through its depthwise
    convolution of ``y`` (``taps`` ``[9, C]``) without being written: ``grad_y +`` the convolution's
    input gradient, and the taps' gradient ``[9, C]``."""
    b, c, h, w = y.shape
    co = _per_image(coeffs, y.dtype)
    extra1 = None if extra is None else extra.detach().reshape(b, c).to(y.dtype).contiguous()
    go = grad_y.to(y.dtype).contiguous(memory_format=torch.channels_last)
    out, grad_taps = torch.empty_like(y), y.new_empty(9, c)
    code = getattr(native.library(), f"value_gradient_stencil_{_suffix(y)}")(
        _pointers(maps), len(maps), co.data_ptr(), _ptr(extra1), y.data_ptr(), taps.data_ptr(), go.data_ptr(), b, c,
        h, w, out.data_ptr(), grad_taps.data_ptr(), torch.get_num_threads())
    _check(code, "value gradient", y)
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
    code = getattr(native.library(), f"base_tail_backward_{_suffix(attended)}")(
        go.data_ptr(), attended.data_ptr(), _pointers(values), len(values), gamma1.data_ptr(), beta1.data_ptr(),
        mean.data_ptr(), rstd.data_ptr(), _ptr(mask1), int(training), b, c, h * w, ga.data_ptr(),
        grad_coeffs.data_ptr(), grad_gamma.data_ptr(), grad_beta.data_ptr(), torch.get_num_threads())
    _check(code, "base tail backward", attended)
    return (ga, grad_coeffs.reshape(coeffs.shape).to(coeffs.dtype), grad_gamma.to(gamma.dtype),
            grad_beta.to(beta.dtype))


def _suffix(t: Tensor) -> str:
    return "f32" if t.dtype == torch.float32 else "f64"


def _check(code: int, what: str, t: Tensor) -> None:
    if code != 0:
        raise RuntimeError(f"native {what} failed ({code}) on maps of shape {tuple(t.shape)}")


def native_join_forward(branch: Tensor, shortcut: Tensor, pool_shortcut: bool):
    """:func:`.tail_kernels.join_forward` in C++ (``resources/native/join.cpp``), one pass."""
    b, c, h, w = branch.shape
    y, pooled_y = torch.empty_like(branch), branch.new_empty(b, c)
    pooled_s = branch.new_empty(b, c) if pool_shortcut else None
    code = getattr(native.library(), f"join_forward_{_suffix(branch)}")(
        branch.data_ptr(), shortcut.data_ptr(), b, c, h * w, y.data_ptr(), pooled_y.data_ptr(), _ptr(pooled_s),
        torch.get_num_threads())
    _check(code, "join", branch)
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
    code = getattr(native.library(), f"join_backward_{_suffix(y)}")(
        gy.data_ptr(), _ptr(gyo), y.data_ptr(), _ptr(gpy), _ptr(gps), _pointers(others), len(others), b, c, h * w,
        grad_branch.data_ptr(), _ptr(grad_shortcut), torch.get_num_threads())
    _check(code, "join backward", y)
    return grad_branch, grad_branch if grad_shortcut is None else grad_shortcut


class ValueGradients:
    """The gradients of one stage's cached value maps, each summed in one pass (MRLA-B, DLA-B).

    Block ``t`` of a stage weighs every value map ``V_1 .. V_t``, so ``V_i``'s gradient is
    ``Σ_{t ≥ i} c_{t,i} ⊙ ga_t`` over the blocks that read it (``ga_t``: the gradient of block
    ``t``'s weighted sum). Returned by every block's backward, these would be written one map per
    block and added by autograd one full-map pass at a time. Instead each block's backward leaves
    its ``ga_t`` here and returns the gradient of its own newest map only, summed over the ``ga``
    of every block that read it. Those blocks' backward has always run by then: block ``t``'s
    output feeds every later block of the stage, so its backward waits for theirs.
    """

    def __init__(self):
        self.pending: dict[int, tuple[Tensor, Tensor]] = {}  # block (its map count) -> (ga, coeffs)

    def newest(self, flavour: str, ga: Tensor, coeffs: Tensor, extra: Tensor | None = None) -> Tensor:
        """Leave block ``t = len(coeffs)``'s ``ga`` and coefficients; return the gradient of ``V_t``,
        plus ``extra`` (a per-channel gradient ``[B, C, 1, 1]``: DLA-B's pooled ``V_t``), in one pass."""
        maps, weights = self.readers(ga, coeffs)
        return k.weighted_sum(flavour, maps, weights, extra)

    def readers(self, ga: Tensor, coeffs: Tensor) -> tuple[list[Tensor], Tensor]:
        """Leave block ``t = len(coeffs)``'s ``ga`` and coefficients; the ``ga`` of every block that
        read ``V_t`` and the coefficients they gave it, ``[readers, B, C, 1, 1]``."""
        t = coeffs.shape[0]
        self.pending[t] = (ga, coeffs)
        readers = [self.pending[u] for u in sorted(self.pending) if u >= t]
        if t == 1:  # the stage's first map: every gradient is out, nothing is needed any more
            self.pending.clear()
        return [g for g, _ in readers], torch.stack([c[t - 1] for _, c in readers])


class BaseTail(Function):
    """``y + mask ⊙ ReLU(BN(Σ_i coeffs[i] ⊙ values[i]))``, ``coeffs`` ``[t, B, C, 1, 1]``; with a
    :class:`ValueGradients` of the stage, returns the gradient of the newest value map only. With
    ``pool_newest`` it also returns ``GAP(values[-1])`` (DLA-B's refresh reads it), whose gradient
    joins the map's in the same pass instead of in an extra full-map addition by autograd."""

    @staticmethod
    def forward(ctx, y, coeffs, gamma, beta, norm: nn.BatchNorm2d, mask, flavour: str,
                value_grads: ValueGradients | None, pool_newest: bool, *values):
        ctx.flavour, ctx.training, ctx.value_grads = flavour, norm.training, value_grads
        attended = k.weighted_sum(flavour, list(values), coeffs)
        if norm.training:
            out, mean, var, rstd = k.BASE_TRAIN(flavour, y, attended, gamma, beta, mask, norm.eps)
            update_running_stats(norm, mean, var, y.shape[0] * k.spatial(y))
        else:
            mean, rstd = eval_stats(norm)
            out = k.BASE_EVAL(flavour, y, attended, gamma, beta, mean, rstd)
        ctx.save_for_backward(attended, coeffs, gamma, beta, mean, rstd, mask, *values)
        if pool_newest:
            return out, gap(values[-1])  # as the reference's BaseAttentionState.append pools it
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, *grad_pooled):
        attended, coeffs, gamma, beta, mean, rstd, mask, *values = ctx.saved_tensors
        ga, grad_gamma, grad_beta = k.BASE_BACKWARD(ctx.flavour, grad_out, attended, gamma, beta, mean, rstd, mask,
                                                    ctx.training)
        grad_coeffs = k.dots(ctx.flavour, ga, values).sum_to_size(coeffs.shape).to(coeffs.dtype)
        # the pooled map's gradient, spread evenly over the map: a per-channel term of its gradient
        extra = grad_pooled[0][:, :, None, None] * (1.0 / k.spatial(ga)) if grad_pooled else None
        if ctx.value_grads is None:  # every map's share of this block's gradient, one map each
            grad_values = [(k.acc(ga) * k.acc(coeff)).to(value.dtype) for value, coeff in zip(values, coeffs)]
            if extra is not None:
                grad_values[-1] = grad_values[-1] + extra.to(grad_values[-1].dtype)
        else:
            grad_values = [None] * (len(values) - 1) + [ctx.value_grads.newest(ctx.flavour, ga, coeffs, extra)]
        return (grad_out, grad_coeffs, grad_gamma.to(gamma.dtype), grad_beta.to(beta.dtype), None, None, None, None,
                None, *grad_values)


class StencilBaseTail(Function):
    """The native :class:`BaseTail` whose newest value map ``V_t`` is the block's depthwise value
    convolution of ``y``, computed inside the first pass (C++), and whose gradient goes through that
    convolution in the pass that sums it, without being written (the library's convolution, forward
    and backward, spared). Takes ``y``, the convolution's weight and the stage's earlier maps;
    returns ``(out, V_t)``, with ``GAP(V_t)`` when ``pool_newest``. Needs the stage's
    :class:`ValueGradients`: later blocks hand ``V_t``'s gradient there, not to autograd."""

    @staticmethod
    def forward(ctx, y, value_weight, coeffs, gamma, beta, norm: nn.BatchNorm2d, mask, value_grads: ValueGradients,
                pool_newest: bool, *earlier):
        taps = stencil_taps(value_weight.detach().to(y.dtype))
        out, pooled, attended, mean, rstd, value = native_base_forward(y, coeffs, gamma, beta, norm, mask, earlier,
                                                                       pool_newest, taps)
        ctx.save_for_backward(y, taps, attended, coeffs, gamma, beta, mean, rstd, mask, *earlier, value)
        ctx.training, ctx.value_grads, ctx.weight = norm.training, value_grads, (value_weight.shape, value_weight.dtype)
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
        grad_y, grad_taps = native_value_gradient(maps, weights, extra, y, taps, grad_out)
        shape, dtype = ctx.weight
        return (grad_y, grad_taps.t().reshape(shape).to(dtype), grad_coeffs, grad_gamma, grad_beta, None, None, None,
                None, *([None] * (len(values) - 1)))


def stencil_base_tail(y: Tensor, value_weight: Tensor, earlier: list[Tensor], coeffs: Tensor, norm: nn.BatchNorm2d,
                      drop_path: DropPath, value_grads: ValueGradients, pool_newest: bool = False):
    """:func:`base_tail` with the block's value convolution inside (:class:`StencilBaseTail`; check
    :func:`native_applies` on ``y`` and ``earlier`` first): ``(out, V_t)`` or ``(out, V_t, GAP(V_t))``."""
    return StencilBaseTail.apply(y, value_weight, coeffs[..., None, None], norm.weight, norm.bias, norm,
                                 drop_path.mask(y), value_grads, pool_newest, *earlier)


def base_tail(y: Tensor, values: list[Tensor], coeffs: Tensor, norm: nn.BatchNorm2d, drop_path: DropPath,
              flavour: str, value_grads: ValueGradients | None = None, pool_newest: bool = False):
    """MRLA-B / DLA-B after the convolutions: ``coeffs`` ``[t, B, C]`` weigh the ``t`` value maps;
    ``value_grads``: the stage's, shared by its blocks (None: every block returns every map's gradient);
    ``pool_newest``: return ``(output, GAP(values[-1]))``.
    Inside a whole-model ``torch.compile`` every block returns every map's gradient: the compiled
    backward cannot hand maps from one block's backward to another's through Python."""
    mask = drop_path.mask(y)
    if torch.compiler.is_compiling():
        value_grads = None
    return BaseTail.apply(y, coeffs[..., None, None], norm.weight, norm.bias, norm, mask, flavour, value_grads,
                          pool_newest, *values)
