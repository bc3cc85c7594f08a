"""The per-block vector work of the layer-attention methods in C++ (``resources/native/vectors.cpp``,
built with the tails' kernels by :mod:`dlarepro.native`), for the tails mode ``native`` on the CPU:

* :class:`LightHead`: MRLA-L's and DLA-L's attention weights from the pooled block output (query and
  key channel convolutions, head scores, sigmoid);
* :class:`ChannelConv`: MRLA-B's and DLA-B's queries and keys;
* :class:`DSUGates` (``resources/native/cells.cpp``): the DSU cell's gate arithmetic after its two
  paths' matrix products, which DLA-B runs on every earlier token of the stage in every block.

Run as torch operators, these vectors of a few hundred values cost ~25 operator calls forward and
~10 autograd nodes backward per block, each far slower than its arithmetic; here one call each way.
Same values and gradients as the torch path (float64 to rounding; ``tests/test_native_tails.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from .. import native
from .cells import DSUCell, RecurrentCell, State, refresh_rows, refresh_state
from .native_tails import check_result, kernel_suffix, library_ready, streamed


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
        code = getattr(native.library(), f"channel_conv_forward_{kernel_suffix(v)}")(
            rows.data_ptr(), taps.data_ptr(), taps.numel(), rows.shape[0], rows.shape[1], out.data_ptr())
        check_result(code, "channel convolution", v)
        streamed(rows, taps, out, vectors=True)
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
        code = getattr(native.library(), f"channel_conv_backward_{kernel_suffix(rows)}")(
            g.data_ptr(), rows.data_ptr(), taps.data_ptr(), taps.numel(), rows.shape[0], rows.shape[1],
            grad_v.data_ptr(), grad_w.data_ptr())
        check_result(code, "channel convolution backward", rows)
        streamed(g, rows, taps, grad_v, grad_w, vectors=True)
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
        if heads < 1 or c % heads:
            raise ValueError(f"light head: {c} channels do not split into {heads} heads")
        weights, qk = torch.empty_like(p), p.new_empty(2, n, c)
        code = getattr(native.library(), f"light_head_forward_{kernel_suffix(p)}")(
            p.data_ptr(), wq.data_ptr(), wk.data_ptr(), wq.numel(), n, c, heads, weights.data_ptr(), qk.data_ptr())
        check_result(code, "light head", p)
        streamed(p, wq, wk, weights, qk, vectors=True)
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
        code = getattr(native.library(), f"light_head_backward_{kernel_suffix(p)}")(
            g.data_ptr(), weights.data_ptr(), qk.data_ptr(), p.data_ptr(), wq.data_ptr(), wk.data_ptr(), wq.numel(),
            n, c, ctx.heads, grad_p.data_ptr(), grad_q.data_ptr(), grad_k.data_ptr())
        check_result(code, "light head backward", p)
        streamed(g, weights, qk, p, wq, wk, grad_p, grad_q, grad_k, vectors=True)
        return grad_p, grad_q.reshape(ctx.shape), grad_k.reshape(ctx.shape), None


def light_head(pooled: Tensor, query_weight: Tensor, key_weight: Tensor, heads: int) -> Tensor:
    """``[B, C]`` attention weights of a light block (check :func:`vectors_apply` first)."""
    return LightHead.apply(pooled, query_weight, key_weight, heads)


#: the DSU's σ on the new cell state (:data:`.cells.SIGMAS`) as the kernel numbers it
SIGMA_CODES = {"sigmoid": 0, "identity": 1, "tanh": 2, "relu": 3}


class DSUGates(Function):
    """``h' = σ(c')``, ``c' = sigmoid(f) c + sigmoid(i) tanh(g)`` with ``i, f, g`` the thirds of
    ``a + b`` (:meth:`.cells.DSUCell.step`, the arithmetic after its paths), one C++ pass each way instead of
    ~10 element-wise operators and their autograd nodes. ``a`` is ``[..., B, 3C]`` (tokens before
    the batch), ``b`` ``[B, 3C]`` and ``c`` ``[B, C]``, shared by the tokens; backward recomputes
    the gates from them."""

    @staticmethod
    def forward(ctx, a, b, c, sigma: int):
        rows, b, c = (t.detach().contiguous() for t in (a.reshape(-1, a.shape[-1]), b, c))
        (n, channels), m = c.shape, rows.shape[0]
        if b.shape != (n, 3 * channels) or rows.shape[1] != 3 * channels or m % n:
            raise ValueError(f"DSU gates: shapes {tuple(a.shape)}, {tuple(b.shape)}, {tuple(c.shape)} do not "
                             f"fit [..., B, 3C], [B, 3C], [B, C]")
        h, c_new = rows.new_empty(m, channels), rows.new_empty(m, channels)
        code = getattr(native.library(), f"dsu_gates_forward_{kernel_suffix(rows)}")(
            rows.data_ptr(), b.data_ptr(), c.data_ptr(), m, n, channels, sigma, torch.get_num_threads(), h.data_ptr(),
            c_new.data_ptr())
        check_result(code, "DSU gates", rows)
        streamed(rows, b, c, h, c_new, vectors=True)
        ctx.save_for_backward(rows, b, c)
        ctx.sigma, ctx.shape = sigma, a.shape
        ctx.set_materialize_grads(False)  # a dropped c' (DLA's refresh calls) needs no pass of zeros
        lead = a.shape[:-1]
        return h.reshape(*lead, channels), c_new.reshape(*lead, channels)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h, grad_c):
        rows, b, c = ctx.saved_tensors
        (n, channels), m = c.shape, rows.shape[0]
        grad_h, grad_c = (None if g is None else g.to(rows.dtype).reshape(m, channels).contiguous()
                          for g in (grad_h, grad_c))
        if grad_h is None:  # only c' was used
            grad_h = rows.new_zeros(m, channels)
        grad_a, grad_b, grad_state = torch.empty_like(rows), torch.empty_like(b), torch.empty_like(c)
        code = getattr(native.library(), f"dsu_gates_backward_{kernel_suffix(rows)}")(
            grad_h.data_ptr(), None if grad_c is None else grad_c.data_ptr(), rows.data_ptr(), b.data_ptr(),
            c.data_ptr(), m, n, channels, ctx.sigma, torch.get_num_threads(), grad_a.data_ptr(), grad_b.data_ptr(),
            grad_state.data_ptr())
        check_result(code, "DSU gates backward", rows)
        streamed(grad_h, grad_c, rows, b, c, grad_a, grad_b, grad_state, vectors=True)
        return grad_a.reshape(ctx.shape), grad_b, grad_state, None


def cell_step(cell: RecurrentCell, x: Tensor, state: State, native: bool,
              from_hidden: Tensor | None = None) -> tuple[Tensor, State]:
    """``cell(x, state)``; ``from_hidden``: ``cell.hidden_path`` of the state's ``h`` if the caller has
    it. With ``native``, a DSU cell's gates run in C++ (:class:`DSUGates`) where :func:`vectors_apply`
    (other cells, and tensors it does not take, run as torch operators)."""
    h, c = state
    from_input = cell.input_path(x)
    from_hidden = cell.hidden_path(h) if from_hidden is None else from_hidden
    if not (native and isinstance(cell, DSUCell) and vectors_apply(x, *state)):
        return cell.step(from_input, from_hidden, state)
    batch = x.shape[-2]  # a state of one row (the official refresh's image 0) serves every image
    h_new, c_new = DSUGates.apply(from_input, from_hidden.expand(batch, -1), c.expand(batch, -1),
                                  SIGMA_CODES[cell.sigma_name])
    return h_new, (h_new, c_new)


def context_step(cell: RecurrentCell, x: Tensor, state: State, from_hidden: Tensor | None,
                 native: bool) -> tuple[State, Tensor]:
    """DLA's context update ``state <- cell(x, state)`` (``from_hidden``: the hidden path of ``state``,
    None at a stage's start) and the new state's hidden path: the block's refresh and the next
    block's context both read it, so it is computed once."""
    _, state = cell_step(cell, x, state, native, from_hidden)
    return state, cell.hidden_path(state[0])


def refresh_gates(cell: RecurrentCell, tokens: Tensor, state: State, from_hidden: Tensor, dsu_state: str,
                  native: bool) -> Tensor:
    """DLA's refresh gates of ``tokens`` from the context ``state`` (whose hidden path is
    ``from_hidden``), the rows that ``dsu_state`` says each image reads (:func:`.cells.refresh_state`);
    the new state is dropped."""
    gates, _ = cell_step(cell, tokens, refresh_state(state, dsu_state), native, refresh_rows(from_hidden, dsu_state))
    return gates
