"""How far each fused tail kernel is from its memory floor (``bench/step_time.py --kernels``).

The tails are bound by memory traffic, so a kernel's floor is the number of full feature maps its
arithmetic must read or write (its "passes"), each costing what one pass of a plain copy costs at
the same shape. A kernel near 1× its floor cannot get faster without reading fewer maps; one far
above it is a code-generation problem. Stage shapes are those of a bottleneck CIFAR ResNet (64,
128, 256 channels at 32, 16, 8 pixels); per-step totals weigh each stage by its blocks.

Also timed: a depthwise 3×3 convolution as a 9-tap stencil compiled from element-wise ops, beside
the library's convolution. Computing the depthwise convolutions inside the tail kernels (whose
inputs they already read) only pays if the stencil runs about as fast as the convolution.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .methods import check_depth
from .models import tail_kernels as k
from .models.parts import stencil_taps
from .models.resnet import Bottleneck


@dataclass(frozen=True)
class KernelCase:
    """One kernel call of a block's tail: its name, the maps it must read or write, and which light
    method's training step calls it (once per block), if any."""

    name: str
    passes: int
    call: Callable[[str, dict], object]
    used_by: tuple[str, ...] = ()


def light_args(m: dict, refreshed: bool) -> tuple:
    return m["s"], m["v"], m["r"] if refreshed else None, m["w"], m["alpha"]


#: full-map passes: maps read plus maps written, where a map read for batch statistics is read again
#: for the output (the statistics must be complete first)
CASES = [
    KernelCase("join forward, GAP(y) and GAP(s)", 3, lambda f, m: k.JOIN_FORWARD(f, m["b"], m["s"], True), ("dla_l",)),
    KernelCase("join forward, GAP(y)", 3, lambda f, m: k.JOIN_FORWARD(f, m["b"], m["s"], False), ("mrla_l",)),
    # with the gradients of the other handles on y and the shortcut (tails.Join) summed in
    KernelCase("join backward, both pools", 7, lambda f, m: k.JOIN_BACKWARD(
        f, m["g"], m["y"], m["pooled"], m["pooled"], m["v"], (m["s"], m["r"])), ("dla_l",)),
    KernelCase("join backward, GAP(y)", 5, lambda f, m: k.JOIN_BACKWARD(
        f, m["g"], m["y"], m["pooled"], None, m["v"], (m["s"],)), ("mrla_l",)),
    KernelCase("light forward (DLA-L)", 3 + 5, lambda f, m: k.LIGHT_TRAIN(
        f, m["y"], *light_args(m, True), m["gamma"], m["beta"], None, 1e-5), ("dla_l",)),
    KernelCase("light forward (MRLA-L)", 2 + 4, lambda f, m: k.LIGHT_TRAIN(
        f, m["y"], *light_args(m, False), m["gamma"], m["beta"], None, 1e-5), ("mrla_l",)),
    KernelCase("light backward (DLA-L)", 4 + 7, lambda f, m: k.LIGHT_BACKWARD(
        f, m["g"], *light_args(m, True), m["gamma"], m["mean"], m["rstd"], None, True), ("dla_l",)),
    KernelCase("light backward (MRLA-L)", 3 + 5, lambda f, m: k.LIGHT_BACKWARD(
        f, m["g"], *light_args(m, False), m["gamma"], m["mean"], m["rstd"], None, True), ("mrla_l",)),
    KernelCase("base forward", 1 + 3, lambda f, m: k.BASE_TRAIN(f, m["y"], m["v"], m["gamma"], m["beta"], None, 1e-5)),
    KernelCase("base backward", 2 + 3, lambda f, m: k.BASE_BACKWARD(
        f, m["g"], m["v"], m["gamma"], m["beta"], m["mean"], m["rstd"], None, True)),
    KernelCase("weighted sum of 4 value maps", 5,
               lambda f, m: k.WEIGHTED_SUM(f, None, [m["y"], m["s"], m["v"], m["r"]], [m["w"]] * 4)),
    KernelCase("coefficient gradients of 4 value maps", 5,
               lambda f, m: k.dots(f, m["g"], [m["y"], m["s"], m["v"], m["r"]])),
]


def stage_shapes(depth: int, batch: int) -> list[tuple[tuple[int, int, int, int], int]]:
    """``[(map shape, blocks)]`` of the three stages of the bottleneck CIFAR ResNet of ``depth``
    (16, 32, 64 planes, widened by the bottleneck's expansion, at 32, 16, 8 pixels)."""
    check_depth(depth, "cifar100")
    blocks, width = (depth - 2) // 9, 16 * Bottleneck.expansion
    return [((batch, width * 2**i, 32 // 2**i, 32 // 2**i), blocks) for i in range(3)]


def sample_maps(shape: tuple[int, ...], channels_last: bool) -> dict[str, Tensor]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    b, c = shape[:2]
    maps = {name: torch.randn(shape).contiguous(memory_format=fmt) for name in ("b", "s", "y", "v", "r", "g")}
    return {**maps, "w": torch.rand(b, c, 1, 1), "alpha": torch.rand(b, c, 1, 1), "pooled": torch.randn(b, c),
            "gamma": torch.rand(c) + 0.5, "beta": torch.randn(c), "mean": torch.randn(c) * 0.1,
            "rstd": torch.rand(c) + 0.5}


def median_ms(fn: Callable[[], object], rounds: int, warmup: int = 2) -> float:
    for _ in range(warmup):  # also compiles
        fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def depthwise_stencil(x: Tensor, taps: Tensor) -> Tensor:
    """A depthwise 3×3 convolution (zero padding 1) as nine shifted, per-channel scaled copies of
    ``x``; ``taps`` is the weight as ``[9, C]`` (tap-major, so each tap's channel vector is contiguous)."""
    h, w = x.shape[2], x.shape[3]
    padded = F.pad(x, (1, 1, 1, 1))
    out = None
    for i in range(3):
        for j in range(3):
            term = padded[:, :, i:i + h, j:j + w] * taps[3 * i + j][None, :, None, None]
            out = term if out is None else out + term
    return out


@dataclass
class KernelTiming:
    name: str
    shape: tuple[int, ...]
    passes: int
    ms: float
    floor_ms: float

    @property
    def over_floor(self) -> float:
        return self.ms / self.floor_ms


def time_kernels(depth: int, batch: int, channels_last: bool = True, flavour: str = "compiled",
                 rounds: int = 9) -> tuple[list[KernelTiming], dict[str, tuple[float, float]]]:
    """Every kernel case and the depthwise stencil at every stage shape, against the copy floor;
    and per light method ``{method: (ms per step in its tail kernels, ms at the floor)}``."""
    stencil = torch.compile(depthwise_stencil, dynamic=False) if flavour == "compiled" else depthwise_stencil
    timings, per_step = [], {}
    for shape, blocks in stage_shapes(depth, batch):
        maps = sample_maps(shape, channels_last)
        per_pass = median_ms(maps["y"].clone, rounds) / 2  # one read and one write
        for case in CASES:
            ms = median_ms(lambda: case.call(flavour, maps), rounds)
            timings.append(KernelTiming(case.name, shape, case.passes, ms, case.passes * per_pass))
            for method in case.used_by:
                spent, floor = per_step.get(method, (0.0, 0.0))
                per_step[method] = (spent + blocks * ms, floor + blocks * case.passes * per_pass)
        weight = torch.randn(shape[1], 1, 3, 3)
        taps = stencil_taps(weight)
        conv = median_ms(lambda: F.conv2d(maps["y"], weight, padding=1, groups=shape[1]), rounds)
        timings.append(KernelTiming("depthwise 3x3, library convolution", shape, 2, conv, 2 * per_pass))
        ms = median_ms(lambda: stencil(maps["y"], taps), rounds)
        timings.append(KernelTiming(f"depthwise 3x3, {flavour} stencil", shape, 2, ms, 2 * per_pass))
    return timings, per_step


def kernel_table(timings: list[KernelTiming]) -> tuple[list[str], list[list[str]]]:
    """One row per kernel, one ``ms (× floor)`` column per stage shape."""
    shapes = list(dict.fromkeys(t.shape for t in timings))
    rows: dict[str, list[str]] = {}
    for t in timings:
        row = rows.setdefault(t.name, [t.name, str(t.passes)] + ["-"] * len(shapes))
        row[2 + shapes.index(t.shape)] = f"{t.ms:.2f} ({t.over_floor:.1f}x)"
    headers = ["kernel", "passes"] + ["x".join(map(str, s[1:])) + " ms (x floor)" for s in shapes]
    return headers, list(rows.values())
