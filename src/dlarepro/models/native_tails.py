"""The tails mode ``native``: the layer-attention tails' C++ kernels (``resources/native``, built by
:mod:`dlarepro.native`) behind autograd Functions, on the CPU.

* :class:`LightJoin` and :class:`LightTail` (MRLA-L, DLA-L): a light block after its convolutions,
  from the branch and the shortcut, in four passes over them (the join's pools and batch norm's
  sums; the output; the gradient's sums; the maps' gradients): ``y = ReLU(branch + s)``, the
  depthwise convolutions ``DW(y)`` and ``DW_{λW}(s)`` and their gradients are never written;
* the helpers every native Function shares: :func:`native_applies`, pointers, batch norm's buffers.

MRLA-B's and DLA-B's join and base tails are in :mod:`.native_base`, the per-block vector work
(attention weights, queries, keys) in :mod:`.native_vectors`.

They take float32 or float64 channels-last CPU maps with channels a multiple of 16
(:func:`native_applies`); :mod:`.tails` runs its compiled kernels (or, in mode ``auto``, the
reference) everywhere else.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Callable

import torch
from torch import Tensor, nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from .. import native
from .parts import stencil_taps
from .tail_kernels import eval_stats, update_running_stats

log = logging.getLogger(__name__)

#: a traffic count listening (:class:`dlarepro.benchtraffic.TrafficCount`), told by every native kernel
#: call what it streamed: ``observer(tensors, vectors)``. A map kernel lists its maps, each once per pass
#: that reads or writes it (the passes the kernels' comments give; per-channel vectors and coefficients,
#: a fraction of a map, left out); a vector kernel (``vectors``) lists every tensor it reads or writes.
traffic_observer: Callable[[list[Tensor], bool], None] | None = None


def streamed(*tensors: Tensor | None, vectors: bool = False) -> None:
    """Tell a listening traffic count what a native kernel call moved (:data:`traffic_observer`)."""
    if traffic_observer is not None:
        traffic_observer([t for t in tensors if t is not None], vectors)


def address(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


#: set once the native kernels failed to build: from then on the tails run compiled (in mode auto, the reference)
native_failed = False


def native_applies(*maps: Tensor) -> bool:
    """Whether the native kernels (:class:`LightJoin`, :class:`StencilBaseTail`, the join) can take
    these maps: CPU, float32 or float64 alike, channels-last, channels a multiple of 16, outside a
    whole-model compile, and the kernels build here; if the build fails, logs why once and answers
    no from then on."""
    first = maps[0]
    return (first.device.type == "cpu" and first.dtype in (torch.float32, torch.float64) and first.dim() == 4
            and first.shape[1] % 16 == 0
            and all(m.dtype == first.dtype and m.device == first.device and m.shape == first.shape
                    and m.is_contiguous(memory_format=torch.channels_last) for m in maps)
            and library_ready())


def library_ready() -> bool:
    """The kernel library builds here and this is not inside a whole-model compile; if the build
    fails, logs why once and answers no from then on."""
    global native_failed
    if native_failed or torch.compiler.is_compiling():
        return False
    try:
        native.library()
    except (native.BuildError, OSError) as error:
        native_failed = True
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        log.warning("the native tails are not available (%s); running the compiled ones", first_line)
        return False
    return True


def addresses(maps) -> ctypes.Array:
    return (ctypes.c_void_p * len(maps))(*(m.data_ptr() for m in maps))


def per_image_coeffs(coeffs: Tensor, dtype: torch.dtype) -> Tensor:
    """Coefficients ``[t, B, C, 1, 1]`` (or ``[t, B, C]``) as the native kernels take them."""
    return coeffs.detach().reshape(coeffs.shape[0], coeffs.shape[1], coeffs.shape[2]).to(dtype).contiguous()


def norm_stats(norm: nn.BatchNorm2d, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Batch norm's ``mean, var, rstd`` ``[C]`` for a native kernel: in training, empty buffers the
    kernel fills with the batch's statistics; in eval, the running ones (``var`` is then not read)."""
    if norm.training:
        return tuple(like.new_empty(like.shape[1]) for _ in range(3))
    mean, rstd = (t.to(like.dtype).contiguous() for t in eval_stats(norm))
    return mean, mean, rstd


def kernel_suffix(t: Tensor) -> str:
    return "f32" if t.dtype == torch.float32 else "f64"


def weight_gradient(grad_taps: Tensor, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """The taps' gradient ``[9, C]`` as the depthwise weight's ``[C, 1, 3, 3]`` (:func:`.parts.stencil_taps`
    backwards)."""
    return grad_taps.t().reshape(shape).to(dtype)


def check_result(code: int, what: str, t: Tensor) -> None:
    if code != 0:
        raise RuntimeError(f"native {what} failed ({code}) on maps of shape {tuple(t.shape)}")


class LightBlock:
    """One light block's native state, from :class:`LightJoin` to :class:`LightTail` and back: the
    branch and the shortcut (``y = ReLU(branch + s)`` is never written), the convolutions' taps, the
    join's per-image moments, and what the tail's backward leaves for the join's backward."""

    branch: Tensor
    shortcut: Tensor
    value_taps: Tensor
    refresh_taps: Tensor | None
    moments: Tensor | None  # [B, 9, C] float64; None in eval
    pending: tuple | None = None  # (grad_out, batch norm's backward per channel, w, alpha, mask)


class LightJoin(Function):
    """The join of a native light block: ``GAP(y)`` (and ``GAP(s)``) of ``y = ReLU(branch + s)``, and
    the sums batch norm's statistics need, in one pass that writes no map. Its backward is the
    block's map pass: the gradients of the branch and the shortcut (through the tail, the ReLU and
    the pools) and of both convolutions' weights, from what :class:`LightTail`'s backward left in
    ``block``; autograd runs it after the tail's backward, which reads ``GAP(y)``."""

    @staticmethod
    def forward(ctx, branch, shortcut, value_weight, refresh_weight, block: LightBlock, pool_shortcut: bool,
                training: bool):
        b, c, h, w = branch.shape
        dtype = branch.dtype
        taps = lambda weight: stencil_taps(weight.detach().to(dtype))
        block.branch, block.shortcut = branch, shortcut
        block.value_taps = taps(value_weight)
        block.refresh_taps = None if refresh_weight is None else taps(refresh_weight)
        block.moments = branch.new_empty(b, 9, c, dtype=torch.float64) if training else None
        pooled_y = branch.new_empty(b, c)
        pooled_s = branch.new_empty(b, c) if pool_shortcut else None
        code = getattr(native.library(), f"light_join_{kernel_suffix(branch)}")(
            branch.data_ptr(), shortcut.data_ptr(), block.value_taps.data_ptr(), address(block.refresh_taps), b, c, h,
            w, pooled_y.data_ptr(), address(pooled_s), address(block.moments), torch.get_num_threads())
        check_result(code, "light join", branch)
        streamed(branch, shortcut)
        ctx.save_for_backward(branch, shortcut)  # through autograd: an in-place change after this raises
        ctx.block = block
        ctx.weights = (value_weight.shape, value_weight.dtype), \
            None if refresh_weight is None else (refresh_weight.shape, refresh_weight.dtype)
        ctx.set_materialize_grads(False)
        return (pooled_y, pooled_s) if pool_shortcut else pooled_y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_pooled_y, grad_pooled_s=None):
        block = ctx.block
        y, shortcut = ctx.saved_tensors
        b, c, h, w = y.shape
        if block.pending is None:  # the tail's output was not differentiated: its gradient is zero
            zeros = y.new_zeros(c)
            block.pending = (None, zeros, zeros, zeros, y.new_zeros(b, c), y.new_zeros(1, c), None)
        go, c1, c2, c3, w2, alpha2, mask1 = block.pending
        block.pending = None
        as_vector = lambda t: None if t is None else t.to(y.dtype).reshape(b, c).contiguous()
        grad_branch, grad_shortcut = torch.empty_like(y), torch.empty_like(y)
        grad_kv, grad_kr = y.new_empty(9, c), y.new_empty(9, c)
        code = getattr(native.library(), f"light_backward_maps_{kernel_suffix(y)}")(
            address(go), y.data_ptr(), shortcut.data_ptr(), block.value_taps.data_ptr(), address(block.refresh_taps),
            w2.data_ptr(), alpha2.data_ptr(), int(alpha2.shape[0] == b), c1.data_ptr(), c2.data_ptr(), c3.data_ptr(),
            address(mask1), address(as_vector(grad_pooled_y)), address(as_vector(grad_pooled_s)), b, c, h, w,
            grad_branch.data_ptr(), grad_shortcut.data_ptr(), grad_kv.data_ptr(), grad_kr.data_ptr(),
            torch.get_num_threads())
        check_result(code, "light block backward", y)
        streamed(go, y, shortcut, grad_branch, grad_shortcut)
        value, refresh = ctx.weights
        return (grad_branch, grad_shortcut, weight_gradient(grad_kv, *value),
                None if refresh is None else weight_gradient(grad_kr, *refresh), None, None, None)


class LightTail(Function):
    """``y + mask ⊙ BN(alpha ⊙ s + w ⊙ DW_value(y) [+ DW_refresh(s)])`` of a block joined by
    :class:`LightJoin`, in one pass (its statistics come from the join's sums). Takes ``GAP(y)`` only
    so that autograd runs this backward before the join's; its backward returns the gradients of
    ``w``, ``alpha``, gamma and beta, and leaves the maps' to the join's backward."""

    @staticmethod
    def forward(ctx, pooled_y, w, alpha, gamma, beta, norm: nn.BatchNorm2d, mask, block: LightBlock):
        y, s = block.branch, block.shortcut
        b, c, h, wd = y.shape
        dtype, suffix = y.dtype, kernel_suffix(y)
        w2 = w.detach().reshape(b, c).to(dtype).contiguous()
        alpha2 = alpha.detach().reshape(-1, c).to(dtype).contiguous()
        gamma1, beta1 = gamma.detach().to(dtype).contiguous(), beta.detach().to(dtype).contiguous()
        mask1 = None if mask is None else mask.reshape(b).to(dtype).contiguous()
        out = torch.empty_like(y)
        mean, var, rstd = norm_stats(norm, y)
        code = getattr(native.library(), f"light_forward_{suffix}")(
            y.data_ptr(), s.data_ptr(), block.value_taps.data_ptr(), address(block.refresh_taps), w2.data_ptr(),
            alpha2.data_ptr(), int(alpha2.shape[0] == b), gamma1.data_ptr(), beta1.data_ptr(), address(mask1),
            address(block.moments), norm.eps, b, c, h, wd, out.data_ptr(), mean.data_ptr(), var.data_ptr(),
            rstd.data_ptr(), int(not norm.training), torch.get_num_threads())
        check_result(code, "light tail", y)
        streamed(y, s, out)
        if norm.training:
            update_running_stats(norm, mean, var, b * h * wd)
        ctx.save_for_backward(w2, alpha2, gamma1, mean, rstd, mask1)
        ctx.block, ctx.training = block, norm.training
        ctx.shapes = w.shape, w.dtype, alpha.shape, alpha.dtype, gamma.dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        w2, alpha2, gamma1, mean, rstd, mask1 = ctx.saved_tensors
        block = ctx.block
        y = block.branch
        b, c, h, wd = y.shape
        go = grad_out.to(y.dtype).contiguous(memory_format=torch.channels_last)
        new = lambda *shape: y.new_empty(shape)
        grad_w, grad_alpha, grad_gamma, grad_beta, c1, c2, c3 = new(b, c), new(b, c), new(c), new(c), new(c), \
            new(c), new(c)
        code = getattr(native.library(), f"light_backward_sums_{kernel_suffix(y)}")(
            go.data_ptr(), y.data_ptr(), block.shortcut.data_ptr(), block.value_taps.data_ptr(),
            address(block.refresh_taps), w2.data_ptr(), alpha2.data_ptr(), int(alpha2.shape[0] == b), gamma1.data_ptr(),
            mean.data_ptr(), rstd.data_ptr(), address(mask1), address(block.moments), int(ctx.training), b, c, h, wd,
            grad_w.data_ptr(), grad_alpha.data_ptr(), grad_gamma.data_ptr(), grad_beta.data_ptr(), c1.data_ptr(),
            c2.data_ptr(), c3.data_ptr(), torch.get_num_threads())
        check_result(code, "light tail backward", y)
        streamed(go, y, block.shortcut)
        block.pending = (go, c1, c2, c3, w2, alpha2, mask1)
        w_shape, w_dtype, alpha_shape, alpha_dtype, gamma_dtype = ctx.shapes
        if alpha_shape[0] == 1:
            grad_alpha = grad_alpha.sum(0, keepdim=True)
        return (None, grad_w.reshape(w_shape).to(w_dtype), grad_alpha.reshape(alpha_shape).to(alpha_dtype),
                grad_gamma.to(gamma_dtype), grad_beta.to(gamma_dtype), None, None, None)


def light_join(branch: Tensor, shortcut: Tensor, value_weight: Tensor, norm: nn.BatchNorm2d,
               refresh_weight: Tensor | None = None, pool_shortcut: bool = False):
    """The join of a native light block (check :func:`native_applies` on ``branch`` and ``shortcut``
    first): ``(block, GAP(y))``, or ``(block, GAP(y), GAP(s))`` with ``pool_shortcut``; hand ``block``
    and ``GAP(y)`` to :func:`light_tail`. ``refresh_weight``: DLA-L's (λ folded in)."""
    block = LightBlock()
    pooled = LightJoin.apply(branch, shortcut, value_weight, refresh_weight, block, pool_shortcut, norm.training)
    return (block, *pooled) if pool_shortcut else (block, pooled)


def light_tail(block: LightBlock, pooled_y: Tensor, weights: Tensor, alpha: Tensor, norm: nn.BatchNorm2d,
               mask: Tensor | None) -> Tensor:
    """The output of a block joined by :func:`light_join`: ``weights`` ``[B, C, 1, 1]`` scale the value
    map, ``alpha`` (``[1 or B, C, 1, 1]``) the shortcut (MRLA-L's λ, DLA-L's ``λ ⊙ gate``); ``mask``:
    drop-path's per-image scale (:meth:`.parts.DropPath.mask`)."""
    return LightTail.apply(pooled_y, weights, alpha, norm.weight, norm.bias, norm, mask, block)
