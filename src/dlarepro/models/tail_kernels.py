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
from torch import Tensor, nn

log = logging.getLogger(__name__)

#: how the tails' kernels run: fused by torch.compile, or op by op ("native" runs them compiled)
FLAVOURS = ("compiled", "eager")


def acc(t: Tensor) -> Tensor:
    """``t`` in the dtype arithmetic runs in: float32 for 16-bit floats, its own otherwise."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def chan(v: Tensor) -> Tensor:
    """A per-channel vector ``[C]`` as ``[1, C, 1, 1]``."""
    return v[None, :, None, None]


def spatial(t: Tensor) -> int:
    return t.shape[2] * t.shape[3]


# ---- batch norm's state, as nn.BatchNorm2d keeps it ----

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


# ---- the block's join: y = ReLU(branch + shortcut) and the pooled vectors attention reads ----

def join_forward(branch: Tensor, shortcut: Tensor, pool_shortcut: bool):
    y = torch.relu(branch + shortcut)
    inv = 1.0 / spatial(y)
    pooled_y = y.sum((2, 3)) * inv
    pooled_s = shortcut.sum((2, 3)) * inv if pool_shortcut else None
    return y, pooled_y, pooled_s


def join_backward(grad_y: Tensor, y: Tensor, grad_pooled_y: Tensor | None, grad_pooled_s: Tensor | None,
                  grad_y_other: Tensor | None = None, grad_s_others: tuple[Tensor | None, ...] = ()):
    """The gradients of ``branch`` and ``shortcut``. ``grad_y_other`` and ``grad_s_others`` are the
    gradients that the other consumers of ``y`` and of the shortcut (the value convolution, the
    tail, DLA-L's refresh) sent to their own handles on those maps (views, :class:`tails.Join`):
    summed here, in the same pass, instead of by autograd one full-map ``add_`` per extra consumer."""
    inv = 1.0 / spatial(y)
    g = grad_y if grad_y_other is None else grad_y + grad_y_other
    if grad_pooled_y is not None:
        g = g + grad_pooled_y[:, :, None, None] * inv
    grad_branch = torch.where(y > 0, g, torch.zeros_like(g))
    grad_shortcut = grad_branch if grad_pooled_s is None else grad_branch + grad_pooled_s[:, :, None, None] * inv
    for other in grad_s_others:
        if other is not None:
            grad_shortcut = grad_shortcut + other
    return grad_branch, grad_shortcut


# ---- light tails (MRLA-L, DLA-L): out = y + mask ⊙ BN(alpha ⊙ s + w ⊙ v [+ r]) ----

def attended(s: Tensor, v: Tensor, r: Tensor | None, w: Tensor, alpha: Tensor) -> Tensor:
    """``alpha ⊙ s + w ⊙ v (+ r)`` in the arithmetic dtype: MRLA-L's LA(y) + λ ⊙ s; for DLA-L
    ``alpha = λ ⊙ gate`` and ``r = DW_{λW}(s)`` make it LA(y) + λ ⊙ (s ⊙ gate + DW(s))."""
    a = acc(s) * acc(alpha) + acc(v) * acc(w)
    return a if r is None else a + acc(r)


def hw_sum(t: Tensor) -> Tensor:
    """Per-image, per-channel sum over the map, ``[B, C, 1, 1]``: reductions stay inside each image,
    where the compiler fuses several of them into one pass over the maps they read."""
    return t.sum((2, 3), keepdim=True)


def batch_stats(a: Tensor, eps: float):
    """Batch mean and (biased) variance per channel, and 1/sqrt(var + eps): a Welford pass per image,
    combined over the batch (Chan et al.), so no full map of ``a`` is ever written."""
    var_b, mean_b = torch.var_mean(a, dim=(2, 3), correction=0)
    mean = mean_b.mean(0)
    var = var_b.mean(0) + (mean_b - mean).square().mean(0)
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


def bn_coefficients(sum_g, sum_ga, count: int, gamma, mean, rstd, training: bool):
    """BN's backward as ``grad_a = c1 ⊙ g + c2 + c3 ⊙ a`` (per channel), from the sums of the masked
    output gradient ``g`` and of ``g ⊙ a`` over the batch; also the gradients of gamma and beta.
    In training the batch statistics depend on ``a`` too (the c2, c3 terms)."""
    sum_gx = (sum_ga - mean * sum_g) * rstd
    c1 = gamma * rstd
    if not training:
        return c1, torch.zeros_like(c1), torch.zeros_like(c1), sum_gx, sum_g
    c3 = -c1 * rstd * sum_gx / count
    c2 = -c1 * sum_g / count - c3 * mean
    return c1, c2, c3, sum_gx, sum_g


def light_backward(grad_out, s, v, r, w, alpha, gamma, mean, rstd, mask, training: bool):
    """Two passes over the maps: per-image sums of products (everything BN's backward and the
    gradients of ``w`` and ``alpha`` need: ``Σ g s``, ``Σ s v``, ...), then the map gradients."""
    g = acc(grad_out) if mask is None else acc(grad_out) * acc(mask)
    s_, v_, r_, w_, al = acc(s), acc(v), None if r is None else acc(r), acc(w), acc(alpha)
    sg, sgs, sgv = hw_sum(g), hw_sum(g * s_), hw_sum(g * v_)
    ss, sv, sss, ssv, svv = hw_sum(s_), hw_sum(v_), hw_sum(s_ * s_), hw_sum(s_ * v_), hw_sum(v_ * v_)
    sga = al * sgs + w_ * sgv
    sav, sas = al * ssv + w_ * svv, al * sss + w_ * ssv  # Σ a v, Σ a s
    if r_ is not None:
        sga = sga + hw_sum(g * r_)
        sav, sas = sav + hw_sum(r_ * v_), sas + hw_sum(r_ * s_)
    count = g.shape[0] * spatial(g)
    c1, c2, c3, grad_gamma, grad_beta = bn_coefficients(sg.sum((0, 2, 3)), sga.sum((0, 2, 3)), count, gamma, mean,
                                                        rstd, training)
    c1, c2, c3 = chan(c1), chan(c2), chan(c3)
    grad_w = c1 * sgv + c2 * sv + c3 * sav
    grad_alpha = c1 * sgs + c2 * ss + c3 * sas
    ga = c1 * g + c2 + c3 * attended(s, v, r, w, alpha)
    grad_r = None if r is None else ga.to(r.dtype)
    return (ga * al).to(s.dtype), (ga * w_).to(v.dtype), grad_r, grad_w, grad_alpha, grad_gamma, grad_beta


# ---- base tails (MRLA-B, DLA-B): out = y + mask ⊙ ReLU(BN(Σ_i c_i ⊙ V_i)) ----

def base_forward_train(y, a, gamma, beta, mask, eps: float):
    mean, var, rstd = batch_stats(acc(a), eps)
    return residual(y, torch.relu(normalise(acc(a), mean, rstd, gamma, beta)), mask), mean, var, rstd


def base_forward_eval(y, a, gamma, beta, mean, rstd):
    return residual(y, torch.relu(normalise(acc(a), mean, rstd, gamma, beta)), None)


def base_backward(grad_out, a, gamma, beta, mean, rstd, mask, training: bool):
    a_ = acc(a)
    g = acc(grad_out) if mask is None else acc(grad_out) * acc(mask)
    g = torch.where(normalise(a_, mean, rstd, gamma, beta) > 0, g, torch.zeros_like(g))  # the ReLU after BN
    count = g.shape[0] * spatial(g)
    c1, c2, c3, grad_gamma, grad_beta = bn_coefficients(hw_sum(g).sum((0, 2, 3)), hw_sum(g * a_).sum((0, 2, 3)),
                                                        count, gamma, mean, rstd, training)
    return (chan(c1) * g + chan(c2) + chan(c3) * a_).to(a.dtype), grad_gamma, grad_beta


#: cached value maps summed per kernel call: a fixed bound keeps the number of compiled variants
#: (one per count, with and without a partial sum) within torch.compile's recompilation limit
SUM_CHUNK = 4


def weighted_sum_chunk(partial: Tensor | None, values: list[Tensor], coeffs: list[Tensor]) -> Tensor:
    """``partial + Σ_i coeffs[i] ⊙ values[i]`` over up to ``SUM_CHUNK`` maps, in one pass."""
    out = None if partial is None else acc(partial)
    for value, coeff in zip(values, coeffs):
        term = acc(value) * acc(coeff)
        out = term if out is None else out + term
    return out.to(values[0].dtype)


def dots_chunk(ga: Tensor, values: list[Tensor]) -> list[Tensor]:
    """``Σ_hw ga ⊙ values[i]`` (per image and channel) for up to ``SUM_CHUNK`` maps, reading ``ga``
    once: the gradients of the coefficients that weighed those maps."""
    g = acc(ga)
    return [hw_sum(g * acc(value)) for value in values]


#: inductor settings for the kernels: never write an intermediate map to memory to read it back
#: (the defaults realise e.g. the attended map ``a`` that both BN's statistics and its output read);
#: recomputing it from the inputs costs arithmetic only, and every saved map is a pass plus fresh
#: memory (page faults on the CPU)
COMPILE_OPTIONS = {"realize_reads_threshold": 100, "realize_opcount_threshold": 1000,
                   "realize_acc_reads_threshold": 100, "realize_cpu_acc_reads_threshold": 100,
                   "realize_opusers_threshold": 100}


#: compiled variants allowed per kernel function (see ``Kernel``)
RECOMPILE_LIMIT = 64


class Kernel:
    """One kernel function, run compiled (``flavour='compiled'``) or eagerly (``'eager'``).

    Compilation happens per input signature on first use (seconds; inductor caches on disk). If
    the compiler fails (no C++ compiler, no Triton), the failure is logged once and this kernel
    runs eagerly from then on: the results are the same, only slower; ``Kernel.failed`` tells the
    ``auto`` mode to use the reference code instead.
    """

    #: set when any kernel failed to compile
    failed = False
    #: while the benchmark counts a step's memory traffic (:mod:`dlarepro.benchtraffic`): runs the
    #: kernel for it, ``observer(kernel, args)``, so that the kernel counts as one operator
    observer = None

    def __init__(self, fn, reread: tuple[str, ...] = ()):
        self.fn = fn
        #: inputs the arithmetic reads twice (statistics or sums first, then the result)
        self.reread = reread
        self.compiled = None
        self.broken = False

    def __call__(self, flavour: str, *args):
        if Kernel.observer is not None:
            return Kernel.observer(self, args)
        if torch.compiler.is_compiling():
            # traced by a compile of the whole model (the run switch ``compile``): the plain
            # function joins that graph and is fused there; compiling it again here would nest
            return self.fn(*args)
        if flavour in ("compiled", "native") and not self.broken:  # native: C++ light tails, the rest compiled
            if self.compiled is None:
                # dynamo's default of 8 variants per function is too few for WEIGHTED_SUM: one per
                # chunk size and partial sum, times memory formats and dtypes (and fullgraph=True
                # turns the 9th into an error); raising it only ever raises it
                dynamo = torch._dynamo.config
                dynamo.recompile_limit = max(dynamo.recompile_limit, RECOMPILE_LIMIT)
                self.compiled = torch.compile(self.fn, dynamic=True, fullgraph=True, options=COMPILE_OPTIONS)
            try:
                return self.compiled(*args)
            except Exception as error:  # a compiler failure; the eager kernel is equivalent
                self.broken = Kernel.failed = True
                first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
                log.warning("torch.compile failed for %s (%s); running it eagerly", self.fn.__name__, first_line)
        return self.fn(*args)


JOIN_FORWARD, JOIN_BACKWARD = Kernel(join_forward), Kernel(join_backward)
LIGHT_TRAIN = Kernel(light_forward_train, reread=("s", "v", "r"))
LIGHT_EVAL = Kernel(light_forward_eval)
LIGHT_BACKWARD = Kernel(light_backward, reread=("grad_out", "s", "v", "r"))
BASE_TRAIN, BASE_EVAL = Kernel(base_forward_train, reread=("a",)), Kernel(base_forward_eval)
BASE_BACKWARD = Kernel(base_backward, reread=("grad_out", "a"))
WEIGHTED_SUM, DOTS = Kernel(weighted_sum_chunk), Kernel(dots_chunk)


def weighted_sum(flavour: str, values: list[Tensor], coeffs: Tensor, start: Tensor | None = None) -> Tensor:
    """``start + Σ_i coeffs[i] ⊙ values[i]`` (coeffs ``[t, B, C, 1, 1]``; ``start`` a map or anything
    that broadcasts against one, None for 0), ``SUM_CHUNK`` maps per pass."""
    out = start
    for start in range(0, len(values), SUM_CHUNK):
        chunk = slice(start, start + SUM_CHUNK)
        out = WEIGHTED_SUM(flavour, out, values[chunk], list(coeffs[chunk]))
    return out


def dots(flavour: str, ga: Tensor, values: list[Tensor]) -> Tensor:
    """``Σ_hw ga ⊙ values[i]`` for every map, ``[t, B, C, 1, 1]``, ``SUM_CHUNK`` maps per pass."""
    out = []
    for start in range(0, len(values), SUM_CHUNK):
        out.extend(DOTS(flavour, ga, values[start:start + SUM_CHUNK]))
    return torch.stack(out)
