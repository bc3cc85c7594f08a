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
* in mode ``native`` (CPU), MRLA-L's and DLA-L's whole block after its convolutions (the join, both
  depthwise convolutions and the tail, in four passes that never write ``y``), and MRLA-B's and
  DLA-B's join and base tails with their value convolutions inside run as C++ kernels
  (:mod:`.native_tails`, :mod:`.native_base`; the per-block vectors: :mod:`.native_vectors`).

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

import os
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from ..runconfig import TAIL_MODES as MODES
from . import native_base as nb
from . import native_tails as nt
from . import tail_kernels as k
from .parts import DropPath, gap
from .tail_kernels import eval_stats, update_running_stats

ENV_VAR = "DLAREPRO_TAILS"


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
        return "native" if nt.native_applies(x) else None  # no compiler: the reference
    return mode


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
        if flavour == "native" and nt.native_applies(branch, shortcut):
            y, pooled_y, pooled_s = nb.native_join_forward(branch, shortcut, pool_shortcut)
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
            grad_branch, grad_shortcut = nb.native_join_backward(grad_y, y, grad_pooled_y, grad_pooled_s, grad_y_other,
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


def light_tail(y: Tensor, shortcut: Tensor, value: Tensor, weights: Tensor, alpha: Tensor, norm: nn.BatchNorm2d,
               drop_path: DropPath, flavour: str, refreshed: Tensor | None = None) -> Tensor:
    """MRLA-L / DLA-L after the convolutions: ``weights`` ``[B, C, 1, 1]`` scale the value map,
    ``alpha`` (``[1 or B, C, 1, 1]``) the shortcut; ``refreshed`` is DLA-L's ``DW_{λW}(s)``."""
    mask = drop_path.mask(y)
    return LightTail.apply(y, shortcut, value, refreshed, weights, alpha, norm.weight, norm.bias, norm, mask, flavour)


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
        attended = k.weighted_sum(flavour, list(values), coeffs)
        if norm.training:
            out, mean, var, rstd = k.BASE_TRAIN(flavour, y, attended, gamma, beta, mask, norm.eps)
            update_running_stats(norm, mean, var, y.shape[0] * k.spatial(y))
        else:
            mean, rstd = eval_stats(norm)
            out = k.BASE_EVAL(flavour, y, attended, gamma, beta, mean, rstd)
        ctx.save_for_backward(attended, coeffs, gamma, beta, mean, rstd, mask, *values)
        ctx.flavour, ctx.training, ctx.value_grads = flavour, norm.training, value_grads
        if pool_newest:
            return out, gap(values[-1])  # as the reference's BaseAttentionState.append pools it
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, *grad_pooled):
        attended, coeffs, gamma, beta, mean, rstd, mask, *values = ctx.saved_tensors
        ga, grad_gamma, grad_beta = k.BASE_BACKWARD(ctx.flavour, grad_out, attended, gamma, beta, mean, rstd, mask,
                                                    ctx.training)
        # the pooled map's gradient, spread evenly over the map: a per-channel term of its gradient
        extra = grad_pooled[0][:, :, None, None] * (1.0 / k.spatial(ga)) if grad_pooled else None
        if ctx.value_grads is None:  # every map's share of this block's gradient, one map each
            grad_values = [(k.acc(ga) * k.acc(coeff)).to(value.dtype) for value, coeff in zip(values, coeffs)]
            if extra is not None:
                grad_values[-1] = grad_values[-1] + extra.to(grad_values[-1].dtype)
        else:
            grad_values = [None] * (len(values) - 1) + [ctx.value_grads.newest(ctx.flavour, ga, coeffs, extra)]
        grad_coeffs = k.dots(ctx.flavour, ga, values).sum_to_size(coeffs.shape).to(coeffs.dtype)
        return (grad_out, grad_coeffs, grad_gamma.to(gamma.dtype), grad_beta.to(beta.dtype), None, None, None, None,
                None, *grad_values)


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
