"""The element-wise arithmetic of the layer-attention tails as pure functions ("kernels").

Each function below is one forward or one backward region of a block's tail, written in plain
torch ops on whole feature maps, with no autograd inside (the backward is written out). Run
through ``torch.compile`` (:class:`Kernel`), each becomes one or two fused loops over memory:
C++/OpenMP on the CPU, Triton on CUDA. Run eagerly, each op is one pass over memory, as in the
reference modules; the results are the same either way.

Conventions: maps are ``[B, C, H, W]`` in any memory format; ``w`` (head weights), ``alpha``
(the shortcut's coefficient) and ``mask`` (drop-path, ``[B, 1, 1, 1]``) broadcast against them;
per-channel vectors (BN parameters and statistics) are ``[C]``. Arithmetic runs in float32 for
16-bit maps (``acc``) and results are cast back, so bf16 maps cost bf16 memory traffic.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: how the tails' kernels run: fused by torch.compile, or op by op
FLAVOURS = ("compiled", "eager")


def acc(t: Tensor) -> Tensor:
    """``t`` in the dtype arithmetic runs in: float32 for 16-bit floats, its own otherwise."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def chan(v: Tensor) -> Tensor:
    """A per-channel vector ``[C]`` as ``[1, C, 1, 1]``."""
    return v[None, :, None, None]


def spatial(t: Tensor) -> int:
    return t.shape[2] * t.shape[3]


# ---- the block's join: y = ReLU(branch + shortcut) and the pooled vectors attention reads ----

def join_forward(branch: Tensor, shortcut: Tensor, pool_shortcut: bool):
    y = torch.relu(branch + shortcut)
    inv = 1.0 / spatial(y)
    pooled_y = y.sum((2, 3)) * inv
    pooled_s = shortcut.sum((2, 3)) * inv if pool_shortcut else None
    return y, pooled_y, pooled_s


def join_backward(grad_y: Tensor, y: Tensor, grad_pooled_y: Tensor | None, grad_pooled_s: Tensor | None):
    inv = 1.0 / spatial(y)
    g = grad_y if grad_pooled_y is None else grad_y + grad_pooled_y[:, :, None, None] * inv
    grad_branch = torch.where(y > 0, g, torch.zeros_like(g))
    grad_shortcut = grad_branch if grad_pooled_s is None else grad_branch + grad_pooled_s[:, :, None, None] * inv
    return grad_branch, grad_shortcut


# ---- light tails (MRLA-L, DLA-L): out = y + mask ⊙ BN(alpha ⊙ s + w ⊙ v [+ r]) ----

def attended(s: Tensor, v: Tensor, r: Tensor | None, w: Tensor, alpha: Tensor) -> Tensor:
    """``alpha ⊙ s + w ⊙ v (+ r)`` in the arithmetic dtype: MRLA-L's LA(y) + λ ⊙ s; for DLA-L
    ``alpha = λ ⊙ gate`` and ``r = DW_{λW}(s)`` make it LA(y) + λ ⊙ (s ⊙ gate + DW(s))."""
    a = acc(s) * acc(alpha) + acc(v) * acc(w)
    return a if r is None else a + acc(r)


def batch_stats(a: Tensor, eps: float):
    var, mean = torch.var_mean(a, dim=(0, 2, 3), correction=0)
    return mean, var, torch.rsqrt(var + eps)


def normalise(a: Tensor, mean: Tensor, rstd: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    return (a - chan(mean)) * chan(rstd * gamma) + chan(beta)


def residual(y: Tensor, z: Tensor, mask: Tensor | None) -> Tensor:
    return (acc(y) + (z if mask is None else z * acc(mask))).to(y.dtype)


def light_forward_train(y, s, v, r, w, alpha, gamma, beta, mask, eps: float):
    a = attended(s, v, r, w, alpha)
    mean, var, rstd = batch_stats(a, eps)
    return residual(y, normalise(a, mean, rstd, gamma, beta), mask), mean, var, rstd


def light_forward_eval(y, s, v, r, w, alpha, gamma, beta, mean, rstd):
    return residual(y, normalise(attended(s, v, r, w, alpha), mean, rstd, gamma, beta), None)


def bn_input_grad(g: Tensor, xhat: Tensor, gamma: Tensor, rstd: Tensor, training: bool):
    """Gradient through BN of its (already masked) output gradient ``g``: the input gradient and
    the gradients of gamma and beta. In training the batch statistics depend on the input too."""
    sum_g = g.sum((0, 2, 3))
    sum_gx = (g * xhat).sum((0, 2, 3))
    if training:
        n = g.shape[0] * spatial(g)
        g = g - chan(sum_g / n) - xhat * chan(sum_gx / n)
    return g * chan(gamma * rstd), sum_gx, sum_g


def light_backward(grad_out, s, v, r, w, alpha, gamma, mean, rstd, mask, training: bool):
    a = attended(s, v, r, w, alpha)
    g = acc(grad_out) if mask is None else acc(grad_out) * acc(mask)
    ga, grad_gamma, grad_beta = bn_input_grad(g, (a - chan(mean)) * chan(rstd), gamma, rstd, training)
    grad_v = (ga * acc(w)).to(v.dtype)
    grad_s = (ga * acc(alpha)).to(s.dtype)
    grad_r = None if r is None else ga.to(r.dtype)
    grad_w = (ga * acc(v)).sum((2, 3), keepdim=True)
    grad_alpha = (ga * acc(s)).sum((2, 3), keepdim=True)
    return grad_s, grad_v, grad_r, grad_w, grad_alpha, grad_gamma, grad_beta


# ---- base tails (MRLA-B, DLA-B): out = y + mask ⊙ ReLU(BN(Σ_i c_i ⊙ V_i)) ----

def base_forward_train(y, a, gamma, beta, mask, eps: float):
    mean, var, rstd = batch_stats(acc(a), eps)
    return residual(y, torch.relu(normalise(acc(a), mean, rstd, gamma, beta)), mask), mean, var, rstd


def base_forward_eval(y, a, gamma, beta, mean, rstd):
    return residual(y, torch.relu(normalise(acc(a), mean, rstd, gamma, beta)), None)


def base_backward(grad_out, a, gamma, beta, mean, rstd, mask, training: bool):
    xhat = (acc(a) - chan(mean)) * chan(rstd)
    g = acc(grad_out) if mask is None else acc(grad_out) * acc(mask)
    g = torch.where(xhat * chan(gamma) + chan(beta) > 0, g, torch.zeros_like(g))  # the ReLU after BN
    ga, grad_gamma, grad_beta = bn_input_grad(g, xhat, gamma, rstd, training)
    return ga.to(a.dtype), grad_gamma, grad_beta


def weighted_sum(values: list[Tensor], coeffs: Tensor) -> Tensor:
    """``Σ_i coeffs[i] ⊙ values[i]`` (coeffs ``[t, B, C, 1, 1]``), one accumulating pass per map."""
    out = values[0] * coeffs[0]
    for value, coeff in zip(values[1:], coeffs[1:]):
        out = torch.addcmul(out, value, coeff)
    return out


def scale_and_dot(ga: Tensor, value: Tensor, coeff: Tensor):
    """For one cached value map: its gradient ``coeff ⊙ ga`` and its coefficient's gradient
    ``Σ_hw ga ⊙ value``, in one pass over both maps."""
    return (acc(ga) * acc(coeff)).to(value.dtype), (acc(ga) * acc(value)).sum((2, 3), keepdim=True)


class Kernel:
    """One kernel function, run compiled (``flavour='compiled'``) or eagerly (``'eager'``).

    Compilation happens per input signature on first use (seconds; inductor caches on disk). If
    the compiler fails (no C++ compiler, no Triton), the failure is logged once and this kernel
    runs eagerly from then on: the results are the same, only slower.
    """

    def __init__(self, fn):
        self.fn = fn
        self.compiled = None
        self.broken = False

    def __call__(self, flavour: str, *args):
        if flavour == "compiled" and not self.broken:
            if self.compiled is None:
                self.compiled = torch.compile(self.fn, dynamic=True, fullgraph=True)
            try:
                return self.compiled(*args)
            except Exception as error:  # a compiler failure; the eager kernel is equivalent
                self.broken = True
                first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
                log.warning("torch.compile failed for %s (%s); running it eagerly", self.fn.__name__, first_line)
        return self.fn(*args)


JOIN_FORWARD, JOIN_BACKWARD = Kernel(join_forward), Kernel(join_backward)
LIGHT_TRAIN, LIGHT_EVAL, LIGHT_BACKWARD = Kernel(light_forward_train), Kernel(light_forward_eval), Kernel(light_backward)
BASE_TRAIN, BASE_EVAL, BASE_BACKWARD = Kernel(base_forward_train), Kernel(base_forward_eval), Kernel(base_backward)
SCALE_AND_DOT = Kernel(scale_and_dot)
