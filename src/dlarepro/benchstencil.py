"""The light tails with their depthwise stencils inside, beside the library's convolutions
(``bench/step_time.py --stencil-tails``).

With the tails mode ``compiled``, MRLA-L and DLA-L write ``DW(y)`` (and DLA-L ``DW_{λW}(s)``) with
the library's depthwise convolution, and the fused tail reads those maps twice forward and twice
backward; the convolutions' backward writes and reads more. The mode ``native``
(:class:`tails.StencilLightTail`, C++ in ``resources/native/stencil_tail.cpp``) computes the whole
light tail, forward and backward, with the 3×3 stencils inside its passes: those maps are never
written. This benchmark checks that both give the same output, gradients and running statistics,
then times them, forward + backward, side by side, on maps fresh from memory, at each stage's shape.
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
from .models import tails

def stencil_tail(y, s, value_weight, refresh_weight, w, alpha, norm, mask) -> Tensor:
    """The light tail with its stencils inside (:class:`tails.StencilLightTail`, the mode ``native``)."""
    return tails.StencilLightTail.apply(y, s, value_weight, refresh_weight, w, alpha, norm.weight, norm.bias, norm,
                                        mask)


def library_tail(y, s, value_weight, refresh_weight, w, alpha, norm, mask, flavour: str = "compiled") -> Tensor:
    """The project's path: the library's depthwise convolutions, then the fused :class:`tails.LightTail`."""
    channels = y.shape[1]
    v = F.conv2d(y, value_weight, padding=1, groups=channels)
    r = None if refresh_weight is None else F.conv2d(s, refresh_weight, padding=1, groups=channels)
    return tails.LightTail.apply(y, s, v, r, w, alpha, norm.weight, norm.bias, norm, mask, flavour)


@dataclass
class Case:
    """One light tail's inputs at one shape: maps, weights, the output gradient and a drop-path mask."""

    leaves: dict[str, Tensor]
    grad_out: Tensor
    mask: Tensor | None
    refresh: bool

    @classmethod
    def make(cls, shape: tuple[int, int, int, int], refresh: bool, drop: bool = True, seed: int = 0) -> Case:
        gen = torch.Generator().manual_seed(seed)
        b, c = shape[:2]
        cl = lambda t: t.contiguous(memory_format=torch.channels_last)
        leaves = {"y": cl(torch.randn(shape, generator=gen).relu()), "s": cl(torch.randn(shape, generator=gen)),
                  "value": torch.randn(c, 1, 3, 3, generator=gen) * 0.3, "w": torch.rand(b, c, 1, 1, generator=gen),
                  # the shortcut's coefficient: MRLA-L's λ, DLA-L's λ ⊙ gate (per image)
                  "alpha": torch.randn(b if refresh else 1, c, 1, 1, generator=gen)}
        if refresh:
            leaves["refresh"] = torch.randn(c, 1, 3, 3, generator=gen) * 0.3
        mask = torch.full((b, 1, 1, 1), 1 / 0.7).index_fill_(0, torch.tensor([0]), 0.0) if drop else None  # image 0 dropped
        leaves = {name: leaf.requires_grad_() for name, leaf in leaves.items()}
        return cls(leaves, cl(torch.randn(shape, generator=gen)), mask, refresh)

    def run(self, path, norm: nn.BatchNorm2d) -> list[Tensor]:
        """Forward and backward through ``path`` (``stencil_tail`` or ``library_tail``): the output
        and the gradient of every input, the BN parameters' included."""
        t = self.leaves
        for leaf in [*t.values(), *norm.parameters()]:
            leaf.grad = None
        out = path(t["y"], t["s"], t["value"], t.get("refresh"), t["w"], t["alpha"], norm, self.mask)
        out.backward(self.grad_out)
        return [out.detach()] + [t[n].grad for n in t] + [norm.weight.grad, norm.bias.grad]


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
    norms = make_norm(case.leaves["y"].shape[1]), make_norm(case.leaves["y"].shape[1])
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
    """Both paths, forward + backward, for MRLA-L (value stencil) and DLA-L (value and refresh
    stencils) at every stage shape of ``depth``; each checked first. ``flavour``: the library path's
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
