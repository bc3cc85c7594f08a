"""The tails with their depthwise stencils inside, beside the library's convolutions
(``bench/step_time.py --stencil-tails``).

With the tails mode ``compiled``, MRLA-L and DLA-L write ``y = ReLU(branch + s)`` in the join,
``DW(y)`` (and DLA-L ``DW_{λW}(s)``) with the library's depthwise convolution, and the fused tail
reads those maps twice forward and twice backward; the convolutions' backward and the join's write
and read more. The mode ``native`` (:class:`native_tails.LightJoin` and :class:`native_tails.LightTail`,
C++ in ``resources/native/light_block.cpp``) computes the whole block after its convolutions, forward
and backward, in four passes over the branch and the shortcut, with ``y`` and the 3×3 stencils
inside: none of those maps is ever written. MRLA-B and DLA-B cache every block's value map ``V_t = DW(y_t)`` for the later blocks of
the stage, so ``V_t`` is written either way; ``native`` (:class:`native_base.StencilBaseTail`, C++ in
``resources/native/base_tail.cpp``) computes it in the base tail's first pass and takes its
gradient through the convolution in the pass that sums it, and runs the rest of the base tail in
passes that stream every map once. This benchmark checks that both paths give the same outputs,
gradients and running statistics, then times them, forward + backward, side by side, on maps fresh
from memory, at each stage's shape: one light block, or one whole stage of base tails.
"""

from __future__ import annotations

import functools
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .benchkernels import stage_shapes
from .models import native_base, native_tails, tails


def stencil_tail(branch, s, value_weight, refresh_weight, w, alpha, norm, mask) -> tuple[Tensor, ...]:
    """The native light block (:func:`native_tails.light_join`, :func:`native_tails.light_tail`, the
    mode ``native``): the output, ``GAP(y)`` and, with the refresh (DLA-L), ``GAP(s)``."""
    block, *pooled = native_tails.light_join(branch, s, value_weight, norm, refresh_weight,
                                             pool_shortcut=refresh_weight is not None)
    return (native_tails.light_tail(block, pooled[0], w, alpha, norm, mask), *pooled)


def library_tail(branch, s, value_weight, refresh_weight, w, alpha, norm, mask,
                 flavour: str = "compiled") -> tuple[Tensor, ...]:
    """The project's other path: the fused :class:`tails.Join`, the library's depthwise convolutions,
    then the fused :class:`tails.LightTail`; returns what :func:`stencil_tail` does."""
    refresh = refresh_weight is not None
    j = tails.join(branch, s, flavour, pool_shortcut=refresh, shortcut_handles=2 if refresh else 1)
    v = F.conv2d(j.y_value, value_weight, padding=1, groups=branch.shape[1])
    r = F.conv2d(j.shortcuts[1], refresh_weight, padding=1, groups=branch.shape[1]) if refresh else None
    out = tails.LightTail.apply(j.y, j.shortcuts[0], v, r, w, alpha, norm.weight, norm.bias, norm, mask, flavour)
    return (out, j.pooled_y, j.pooled_s) if refresh else (out, j.pooled_y)


@dataclass
class Case:
    """One light block's inputs at one shape: branch and shortcut maps, weights, the gradients of the
    output and the pooled vectors, and a drop-path mask."""

    leaves: dict[str, Tensor]
    grads: tuple[Tensor, ...]
    mask: Tensor | None
    refresh: bool

    @classmethod
    def make(cls, shape: tuple[int, int, int, int], refresh: bool, drop: bool = True, seed: int = 0,
             dtype: torch.dtype = torch.float32) -> Case:
        gen = torch.Generator().manual_seed(seed)
        b, c = shape[:2]
        cl = lambda t: t.to(dtype).contiguous(memory_format=torch.channels_last)
        leaves = {"branch": cl(torch.randn(shape, generator=gen)), "s": cl(torch.randn(shape, generator=gen)),
                  "value": torch.randn(c, 1, 3, 3, generator=gen) * 0.3, "w": torch.rand(b, c, 1, 1, generator=gen),
                  # the shortcut's coefficient: MRLA-L's λ, DLA-L's λ ⊙ gate (per image)
                  "alpha": torch.randn(b if refresh else 1, c, 1, 1, generator=gen)}
        if refresh:
            leaves["refresh"] = torch.randn(c, 1, 3, 3, generator=gen) * 0.3
        mask = torch.full((b, 1, 1, 1), 1 / 0.7).index_fill_(0, torch.tensor([0]), 0.0) if drop else None  # image 0 dropped
        leaves = {name: leaf.to(dtype).requires_grad_() for name, leaf in leaves.items()}
        pooled = [torch.randn(b, c, generator=gen).to(dtype) for _ in range(2 if refresh else 1)]
        return cls(leaves, (cl(torch.randn(shape, generator=gen)), *pooled),
                   None if mask is None else mask.to(dtype), refresh)

    def run(self, path, norm: nn.BatchNorm2d) -> list[Tensor]:
        """Forward and backward through ``path`` (``stencil_tail`` or ``library_tail``): the outputs
        and the gradient of every input, the BN parameters' included."""
        t = self.leaves
        for leaf in [*t.values(), *norm.parameters()]:
            leaf.grad = None
        outputs = path(t["branch"], t["s"], t["value"], t.get("refresh"), t["w"], t["alpha"], norm, self.mask)
        torch.autograd.backward(outputs, self.grads)
        return [o.detach() for o in outputs] + [t[n].grad for n in t] + [norm.weight.grad, norm.bias.grad]


def make_norm(channels: int, seed: int = 0) -> nn.BatchNorm2d:
    gen = torch.Generator().manual_seed(seed)
    norm = nn.BatchNorm2d(channels)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(channels, generator=gen) + 0.5)
        norm.bias.copy_(torch.randn(channels, generator=gen))
    return norm


def max_relative_difference(case: Case, library=library_tail) -> float:
    """The largest difference between the native and the compiled path over the output, every
    gradient and the running statistics, each relative to the largest entry of the reference."""
    channels, dtype = case.leaves["branch"].shape[1], case.leaves["branch"].dtype
    norms = make_norm(channels).to(dtype), make_norm(channels).to(dtype)
    ours, ref = case.run(stencil_tail, norms[0]), case.run(library, norms[1])
    ours += [norms[0].running_mean, norms[0].running_var]
    ref += [norms[1].running_mean, norms[1].running_var]
    return max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() for a, b in zip(ours, ref))


def cold_ms(fn, rounds: int, flush: Tensor, warmup: int = 2) -> float:
    """Median time of ``fn`` with the caches flushed before each call (a training step's maps come
    from memory)."""
    times = []
    for i in range(warmup + rounds):
        flush.fill_(i)
        start = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


@dataclass
class StencilTiming:
    method: str
    shape: tuple[int, ...]
    blocks: int
    library_ms: float
    stencil_ms: float
    difference: float


def time_stencil_tails(depth: int, batch: int, rounds: int = 9, flush_mib: int = 128,
                       flavour: str = "compiled") -> list[StencilTiming]:
    """Both paths, forward + backward, for MRLA-L's light block (value stencil) and DLA-L's (value and
    refresh stencils) at every stage shape of ``depth``; each checked first. ``flavour``: the library path's
    tail kernels (``eager`` spares compiling them, for a quick check)."""
    flush = torch.empty(flush_mib * 2**20 // 4)
    timings = []
    for shape, blocks in stage_shapes(depth, batch):
        for method, refresh in (("mrla_l", False), ("dla_l", True)):
            case = Case.make(shape, refresh, drop=False)
            library = functools.partial(library_tail, flavour=flavour)
            difference = max_relative_difference(case, library)
            norm = make_norm(shape[1])
            library_ms = cold_ms(lambda: case.run(library, norm), rounds, flush)
            stencil_ms = cold_ms(lambda: case.run(stencil_tail, norm), rounds, flush)
            timings.append(StencilTiming(method, shape, blocks, library_ms, stencil_ms, difference))
    return timings


def stencil_table(timings: list[StencilTiming]) -> tuple[list[str], list[list[str]]]:
    headers = ["method", "maps", "library convs + fused tail ms", "stencils inside ms", "x", "max rel. difference"]
    rows = [[t.method, "x".join(map(str, t.shape[1:])), f"{t.library_ms:.2f}", f"{t.stencil_ms:.2f}",
             f"{t.stencil_ms / t.library_ms:.2f}", f"{t.difference:.1e}"] for t in timings]
    return headers, rows


def per_step_saving(timings: list[StencilTiming]) -> dict[str, tuple[float, float]]:
    """``{method: (ms per step with the library path, ms with the stencils inside)}``, each stage's
    time weighed by its blocks."""
    out: dict[str, tuple[float, float]] = {}
    for t in timings:
        lib, sten = out.get(t.method, (0.0, 0.0))
        out[t.method] = (lib + t.blocks * t.library_ms, sten + t.blocks * t.stencil_ms)
    return out


@dataclass
class BaseStage:
    """One stage of MRLA-B / DLA-B base tails: every block's ``y``, value convolution weight,
    coefficients over the stage's maps so far, output gradient and BN; with ``pooled`` (DLA-B) every
    block also returns ``GAP(V_t)``, with a gradient of its own."""

    ys: list[Tensor]
    weights: list[Tensor]
    coeffs: list[Tensor]
    grads: list[Tensor]
    pooled_grads: list[Tensor] | None
    mask: Tensor | None

    @classmethod
    def make(cls, shape: tuple[int, int, int, int], blocks: int, pooled: bool, drop: bool = True,
             seed: int = 0, dtype: torch.dtype = torch.float32) -> BaseStage:
        gen = torch.Generator().manual_seed(seed)
        b, c = shape[:2]
        cl = lambda t: t.to(dtype).contiguous(memory_format=torch.channels_last)
        leaf = lambda t: t.to(dtype).requires_grad_()
        ys = [leaf(cl(torch.randn(shape, generator=gen).relu())) for _ in range(blocks)]
        weights = [leaf(torch.randn(c, 1, 3, 3, generator=gen) * 0.3) for _ in range(blocks)]
        coeffs = [leaf(torch.rand(t + 1, b, c, generator=gen)) for t in range(blocks)]
        grads = [cl(torch.randn(shape, generator=gen)) for _ in range(blocks)]
        pooled_grads = [torch.randn(b, c, generator=gen).to(dtype) for _ in range(blocks)] if pooled else None
        mask = torch.full((b, 1, 1, 1), 1 / 0.7, dtype=dtype).index_fill_(0, torch.tensor([0]), 0.0) if drop else None
        return cls(ys, weights, coeffs, grads, pooled_grads, mask)

    def run(self, native: bool, norms: list[nn.BatchNorm2d], flavour: str = "compiled") -> list[Tensor]:
        """Forward and backward of the stage, natively or with the library's convolutions and
        :class:`tails.BaseTail`: every output, then the gradient of every input and BN parameter."""
        leaves = [*self.ys, *self.weights, *self.coeffs, *(p for n in norms for p in n.parameters())]
        for leaf in leaves:
            leaf.grad = None
        pooled = self.pooled_grads is not None
        value_grads, values, outputs, grads = tails.ValueGradients(), [], [], []
        for t, (y, weight, coeffs, norm) in enumerate(zip(self.ys, self.weights, self.coeffs, norms)):
            co = coeffs[..., None, None]
            if native:
                out = native_base.StencilBaseTail.apply(y, weight, co, norm.weight, norm.bias, norm, self.mask,
                                                         value_grads, pooled, None, *values)
                values.append(out[1])
                out = (out[0], out[2]) if pooled else (out[0],)
            else:
                values.append(F.conv2d(y, weight, padding=1, groups=y.shape[1]))
                out = tails.BaseTail.apply(y, co, norm.weight, norm.bias, norm, self.mask, flavour, value_grads,
                                           pooled, *values)
                out = out if pooled else (out,)
            outputs.extend(out)
            grads.extend((self.grads[t], self.pooled_grads[t]) if pooled else (self.grads[t],))
        torch.autograd.backward(outputs, grads)
        return [o.detach() for o in outputs] + [leaf.grad for leaf in leaves]


def base_stage_difference(stage: BaseStage, flavour: str = "compiled") -> float:
    """The largest difference between the native and the library path over the outputs, every
    gradient and the running statistics, each relative to the largest entry of the reference.
    Check in float64: in float32 the ReLU after batch norm can decide an entry differently in two
    correct implementations when it lands within rounding of zero (one in millions here), and that
    entry's gradient shifts its channel's batch-norm gradient by ~1e-2 of its largest entry."""
    channels, blocks = stage.ys[0].shape[1], len(stage.ys)
    dtype = stage.ys[0].dtype
    ours_norms = [make_norm(channels, seed=i).to(dtype) for i in range(blocks)]
    ref_norms = [make_norm(channels, seed=i).to(dtype) for i in range(blocks)]
    ours, ref = stage.run(True, ours_norms), stage.run(False, ref_norms, flavour)
    for a, b in zip(ours_norms, ref_norms):
        ours += [a.running_mean, a.running_var]
        ref += [b.running_mean, b.running_var]
    return max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() for a, b in zip(ours, ref))


def time_stencil_base_tails(depth: int, batch: int, rounds: int = 9, flush_mib: int = 128,
                            flavour: str = "compiled") -> list[StencilTiming]:
    """Both paths, forward + backward, for one whole stage of MRLA-B (no pooling) and DLA-B (its
    value maps pooled) at every stage shape of ``depth``; each checked first. ``blocks`` of a
    timing is 1: the time is a stage's."""
    flush = torch.empty(flush_mib * 2**20 // 4)
    timings = []
    for shape, blocks in stage_shapes(depth, batch):
        for method, pooled in (("mrla_b", False), ("dla_b", True)):
            difference = base_stage_difference(BaseStage.make(shape, blocks, pooled, dtype=torch.float64), flavour)
            stage = BaseStage.make(shape, blocks, pooled, drop=False)
            norms = [make_norm(shape[1]) for _ in range(blocks)]
            library_ms = cold_ms(lambda: stage.run(False, norms, flavour), rounds, flush)
            stencil_ms = cold_ms(lambda: stage.run(True, norms), rounds, flush)
            timings.append(StencilTiming(method, shape, 1, library_ms, stencil_ms, difference))
    return timings
