"""The tails mode ``native``: the layer-attention tails' C++ kernels (``resources/native``, built by
:mod:`dlarepro.native`) behind autograd Functions, on the CPU.

* :class:`LightJoin` and :class:`LightTail` (MRLA-L, DLA-L): a light block after its convolutions,
  from the branch and the shortcut, in four passes over them (the join's pools and batch norm's
  sums; the output; the gradient's sums; the maps' gradients): ``y = ReLU(branch + s)``, the
  depthwise convolutions ``DW(y)`` and ``DW_{λW}(s)`` and their gradients are never written;
* :class:`BaseJoin` and :class:`StencilBaseTail` (MRLA-B, DLA-B): the join, one pass, and the base
  tail, with the block's value convolution ``V_t = DW(y)`` computed in its first pass; ``V_t``'s
  gradient (never written) is taken through the convolution and the join's ReLU in one pass that
  sums it over the blocks that read it and writes the branch's gradient (the join's backward);
* :func:`native_join_forward` / :func:`native_join_backward`: the join of :class:`.tails.Join`, one
  pass each;
* :class:`LightHead` (MRLA-L's and DLA-L's attention weights from the pooled block output) and
  :class:`ChannelConv` (MRLA-B's and DLA-B's queries and keys): per-block vector work, one call each
  way instead of ~25 small operators (``resources/native/vectors.cpp``; :func:`vectors_apply`).

They take float32 or float64 channels-last CPU maps with channels a multiple of 16
(:func:`native_applies`); :mod:`.tails` runs its compiled kernels (or, in mode ``auto``, the
reference) everywhere else.
"""

from __future__ import annotations

import ctypes
import logging

import torch
from torch import Tensor, nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from .. import native
from . import tail_kernels as k
from .parts import DropPath, stencil_taps
from .tail_kernels import eval_stats, update_running_stats

log = logging.getLogger(__name__)


def _ptr(t: Tensor | None) -> int | None:
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


def _pointers(maps) -> ctypes.Array:
    return (ctypes.c_void_p * len(maps))(*(m.data_ptr() for m in maps))


def _per_image(coeffs: Tensor, dtype: torch.dtype) -> Tensor:
    """Coefficients ``[t, B, C, 1, 1]`` (or ``[t, B, C]``) as the native kernels take them."""
    return coeffs.detach().reshape(coeffs.shape[0], coeffs.shape[1], coeffs.shape[2]).to(dtype).contiguous()


def _norm_stats(norm: nn.BatchNorm2d, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Batch norm's ``mean, var, rstd`` ``[C]`` for a native kernel: in training, empty buffers the
    kernel fills with the batch's statistics; in eval, the running ones (``var`` is then not read)."""
    if norm.training:
        return tuple(like.new_empty(like.shape[1]) for _ in range(3))
    mean, rstd = (t.to(like.dtype).contiguous() for t in eval_stats(norm))
    return mean, mean, rstd


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
    mean, var, rstd = _norm_stats(norm, y)
    pooled = y.new_empty(b, c) if pool_newest else None
    code = getattr(native.library(), f"base_tail_forward_{_suffix(y)}")(
        _pointers(values), len(values), taps.data_ptr(), co.data_ptr(), y.data_ptr(), gamma1.data_ptr(),
        beta1.data_ptr(), _ptr(mask1), norm.eps, b, c, h, w, attended.data_ptr(), out.data_ptr(), mean.data_ptr(),
        var.data_ptr(), rstd.data_ptr(), _ptr(pooled), int(not norm.training), torch.get_num_threads())
    _check(code, "base tail", y)
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
    co = _per_image(coeffs, y.dtype)
    as_vector = lambda t: None if t is None else t.detach().reshape(b, c).to(y.dtype).contiguous()
    extra1, gpy = as_vector(extra), as_vector(grad_pooled_y)
    go = None if grad_y is None else grad_y.to(y.dtype).contiguous(memory_format=torch.channels_last)
    out, grad_taps = torch.empty_like(y), y.new_empty(9, c)
    code = getattr(native.library(), f"value_gradient_stencil_{_suffix(y)}")(
        _pointers(maps), len(maps), co.data_ptr(), _ptr(extra1), y.data_ptr(), taps.data_ptr(), _ptr(go), _ptr(gpy),
        int(relu), b, c, h, w, out.data_ptr(), grad_taps.data_ptr(), torch.get_num_threads())
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


def _weight_gradient(grad_taps: Tensor, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """The taps' gradient ``[9, C]`` as the depthwise weight's ``[C, 1, 3, 3]`` (:func:`.parts.stencil_taps`
    backwards)."""
    return grad_taps.t().reshape(shape).to(dtype)


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
        block.value_taps, block.refresh_taps = taps(value_weight), None if refresh_weight is None else taps(refresh_weight)
        block.moments = branch.new_empty(b, 9, c, dtype=torch.float64) if training else None
        pooled_y = branch.new_empty(b, c)
        pooled_s = branch.new_empty(b, c) if pool_shortcut else None
        code = getattr(native.library(), f"light_join_{_suffix(branch)}")(
            branch.data_ptr(), shortcut.data_ptr(), block.value_taps.data_ptr(), _ptr(block.refresh_taps), b, c, h, w,
            pooled_y.data_ptr(), _ptr(pooled_s), _ptr(block.moments), torch.get_num_threads())
        _check(code, "light join", branch)
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
        code = getattr(native.library(), f"light_backward_maps_{_suffix(y)}")(
            _ptr(go), y.data_ptr(), shortcut.data_ptr(), block.value_taps.data_ptr(), _ptr(block.refresh_taps),
            w2.data_ptr(), alpha2.data_ptr(), int(alpha2.shape[0] == b), c1.data_ptr(), c2.data_ptr(), c3.data_ptr(),
            _ptr(mask1), _ptr(as_vector(grad_pooled_y)), _ptr(as_vector(grad_pooled_s)), b, c, h, w,
            grad_branch.data_ptr(), grad_shortcut.data_ptr(), grad_kv.data_ptr(), grad_kr.data_ptr(),
            torch.get_num_threads())
        _check(code, "light block backward", y)
        value, refresh = ctx.weights
        return (grad_branch, grad_shortcut, _weight_gradient(grad_kv, *value),
                None if refresh is None else _weight_gradient(grad_kr, *refresh), None, None, None)


class LightTail(Function):
    """``y + mask ⊙ BN(alpha ⊙ s + w ⊙ DW_value(y) [+ DW_refresh(s)])`` of a block joined by
    :class:`LightJoin`, in one pass (its statistics come from the join's sums). Takes ``GAP(y)`` only
    so that autograd runs this backward before the join's; its backward returns the gradients of
    ``w``, ``alpha``, gamma and beta, and leaves the maps' to the join's backward."""

    @staticmethod
    def forward(ctx, pooled_y, w, alpha, gamma, beta, norm: nn.BatchNorm2d, mask, block: LightBlock):
        y, s = block.branch, block.shortcut
        b, c, h, wd = y.shape
        dtype, suffix = y.dtype, _suffix(y)
        w2 = w.detach().reshape(b, c).to(dtype).contiguous()
        alpha2 = alpha.detach().reshape(-1, c).to(dtype).contiguous()
        gamma1, beta1 = gamma.detach().to(dtype).contiguous(), beta.detach().to(dtype).contiguous()
        mask1 = None if mask is None else mask.reshape(b).to(dtype).contiguous()
        out = torch.empty_like(y)
        mean, var, rstd = _norm_stats(norm, y)
        code = getattr(native.library(), f"light_forward_{suffix}")(
            y.data_ptr(), s.data_ptr(), block.value_taps.data_ptr(), _ptr(block.refresh_taps), w2.data_ptr(),
            alpha2.data_ptr(), int(alpha2.shape[0] == b), gamma1.data_ptr(), beta1.data_ptr(), _ptr(mask1),
            _ptr(block.moments), norm.eps, b, c, h, wd, out.data_ptr(), mean.data_ptr(), var.data_ptr(),
            rstd.data_ptr(), int(not norm.training), torch.get_num_threads())
        _check(code, "light tail", y)
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
        code = getattr(native.library(), f"light_backward_sums_{_suffix(y)}")(
            go.data_ptr(), y.data_ptr(), block.shortcut.data_ptr(), block.value_taps.data_ptr(),
            _ptr(block.refresh_taps), w2.data_ptr(), alpha2.data_ptr(), int(alpha2.shape[0] == b), gamma1.data_ptr(),
            mean.data_ptr(), rstd.data_ptr(), _ptr(mask1), _ptr(block.moments), int(ctx.training), b, c, h, wd,
            grad_w.data_ptr(), grad_alpha.data_ptr(), grad_gamma.data_ptr(), grad_beta.data_ptr(), c1.data_ptr(),
            c2.data_ptr(), c3.data_ptr(), torch.get_num_threads())
        _check(code, "light tail backward", y)
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
        return grad_branch, grad_branch, _weight_gradient(grad_taps, shape, dtype), None


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
        return (grad_y, _weight_gradient(grad_taps, shape, dtype), *rest)


def stencil_base_tail(y: Tensor, value_weight: Tensor, earlier: list[Tensor], coeffs: Tensor, norm: nn.BatchNorm2d,
                      drop_path: DropPath, value_grads, pool_newest: bool = False, block: BaseBlock | None = None):
    """:func:`.tails.base_tail` with the block's value convolution inside (:class:`StencilBaseTail`; check
    :func:`native_applies` on ``y`` and ``earlier`` first): ``(out, V_t)`` or ``(out, V_t, GAP(V_t))``;
    ``block``: from :func:`base_join` (``y`` its output), whose backward then makes the map pass."""
    return StencilBaseTail.apply(y, value_weight, coeffs[..., None, None], norm.weight, norm.bias, norm,
                                 drop_path.mask(y), value_grads, pool_newest, block, *earlier)


def vectors_apply(*vectors: Tensor) -> bool:
    """Whether the native vector kernels (:func:`channel_conv`, :func:`light_head`) can take these
    tensors: CPU, float32 or float64 alike, outside a whole-model compile, the library built."""
    first = vectors[0]
    return (first.device.type == "cpu" and first.dtype in (torch.float32, torch.float64)
            and all(v.device == first.device and v.dtype == first.dtype for v in vectors)
            and library_ready())


class ChannelConv(Function):
    """:class:`.parts.ChannelConvFunction` (a convolution across the last dimension) in C++, one
    call each way instead of ~2k + 3 operators."""

    @staticmethod
    def forward(ctx, v, weight):
        rows = v.detach().reshape(-1, v.shape[-1]).contiguous()
        taps = weight.detach().reshape(-1).contiguous()
        out = torch.empty_like(rows)
        code = getattr(native.library(), f"channel_conv_forward_{_suffix(v)}")(
            rows.data_ptr(), taps.data_ptr(), taps.numel(), rows.shape[0], rows.shape[1], out.data_ptr())
        _check(code, "channel convolution", v)
        ctx.save_for_backward(rows, taps)
        ctx.shapes = v.shape, weight.shape
        return out.reshape(v.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        rows, taps = ctx.saved_tensors
        v_shape, w_shape = ctx.shapes
        g = grad.to(rows.dtype).reshape(rows.shape).contiguous()
        grad_v, grad_w = torch.empty_like(rows), torch.empty_like(taps)
        code = getattr(native.library(), f"channel_conv_backward_{_suffix(rows)}")(
            g.data_ptr(), rows.data_ptr(), taps.data_ptr(), taps.numel(), rows.shape[0], rows.shape[1],
            grad_v.data_ptr(), grad_w.data_ptr())
        _check(code, "channel convolution backward", rows)
        return grad_v.reshape(v_shape), grad_w.reshape(w_shape)


def channel_conv(v: Tensor, weight: Tensor) -> Tensor:
    """:func:`.parts.channel_conv` in C++ (check :func:`vectors_apply` on ``v`` and ``weight`` first)."""
    if weight.shape[-1] % 2 == 0:
        raise ValueError(f"channel_conv needs an odd kernel size, got {weight.shape[-1]}")
    return ChannelConv.apply(v, weight)


class LightHead(Function):
    """MRLA-L's and DLA-L's attention weights ``sigmoid(<q_h, k_h> / sqrt(d))`` per channel, ``q`` and
    ``k`` the channel convolutions of the pooled block output (:meth:`.interactions.LightAttentionBase
    .head_weights`), in one C++ call each way instead of ~25 operators and ~10 autograd nodes."""

    @staticmethod
    def forward(ctx, pooled, query_weight, key_weight, heads: int):
        p = pooled.detach().contiguous()
        wq, wk = (w.detach().reshape(-1).contiguous() for w in (query_weight, key_weight))
        if wq.numel() != wk.numel() or wq.numel() % 2 == 0:
            raise ValueError(f"light head: query and key need the same odd kernel size, got {wq.numel()}, {wk.numel()}")
        n, c = p.shape
        weights, qk = torch.empty_like(p), p.new_empty(2, n, c)
        code = getattr(native.library(), f"light_head_forward_{_suffix(p)}")(
            p.data_ptr(), wq.data_ptr(), wk.data_ptr(), wq.numel(), n, c, heads, weights.data_ptr(), qk.data_ptr())
        _check(code, "light head", p)
        ctx.save_for_backward(p, wq, wk, weights, qk)
        ctx.heads, ctx.shape = heads, query_weight.shape
        return weights

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        p, wq, wk, weights, qk = ctx.saved_tensors
        n, c = p.shape
        g = grad.to(p.dtype).contiguous()
        grad_p, grad_q, grad_k = torch.empty_like(p), torch.empty_like(wq), torch.empty_like(wk)
        code = getattr(native.library(), f"light_head_backward_{_suffix(p)}")(
            g.data_ptr(), weights.data_ptr(), qk.data_ptr(), p.data_ptr(), wq.data_ptr(), wk.data_ptr(), wq.numel(),
            n, c, ctx.heads, grad_p.data_ptr(), grad_q.data_ptr(), grad_k.data_ptr())
        _check(code, "light head backward", p)
        return grad_p, grad_q.reshape(ctx.shape), grad_k.reshape(ctx.shape), None


def light_head(pooled: Tensor, query_weight: Tensor, key_weight: Tensor, heads: int) -> Tensor:
    """``[B, C]`` attention weights of a light block (check :func:`vectors_apply` first)."""
    return LightHead.apply(pooled, query_weight, key_weight, heads)

