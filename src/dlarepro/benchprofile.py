"""Where a training step's time goes: profiler self time by operator family, model beside model
(``bench/step_time.py --profile``).

Self time (an op's own time, without the ops it calls) adds up to the step's total without double
counting. The families say what kind of work it is: convolutions, batch norm, element-wise passes and
reductions run op by op, the fused tails' kernels (native or compiled, with the Python of their
autograd Functions and the compiler's guards), the per-block vector work (the channel convolutions
of queries, keys and light heads, the DSU cell's gates in C++), small matrix products (cells,
heads, classifier), the rest.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from .bench import StepSetup

#: eager ops that stream over tensors element by element (or reduce them): aten names without the
#: trailing underscore of in-place variants
ELEMENTWISE = {
    "add", "sub", "mul", "div", "addcmul", "addcdiv", "neg", "sum", "mean", "var_mean", "relu", "clamp_min",
    "threshold_backward", "where", "gt", "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "exp", "rsqrt",
    "sqrt", "copy", "fill", "zero", "lerp", "_softmax", "_softmax_backward_data", "bernoulli", "square", "pow",
    "native_dropout", "cat", "stack", "clone", "masked_fill", "_log_softmax", "_log_softmax_backward_data",
}
MATMUL = {"mm", "addmm", "bmm", "matmul", "linear"}
#: autograd Functions of the fused tails (their own Python time) and the compiler's wrappers
FUSED_MARKERS = ("CompiledFxGraph", "Torch-Compiled Region", "TorchDynamo", "Join", "LightTail", "BaseTail")
#: the per-block vector work's autograd Functions (torch or native: parts, native_vectors)
VECTOR_MARKERS = ("ChannelConv", "LightHead", "DSUGates")
#: the fused tails' family name (the traffic count files its kernels under it too)
FUSED_FAMILY = "fused tails (native or compiled kernels)"
#: the per-block vector work's family name (the traffic count files the native vector kernels under it)
VECTOR_FAMILY = "per-block vectors (queries, keys, heads, DSU gates)"


def aten_name(event: str) -> str:
    return event.split("::", 1)[1].rstrip("_") if event.startswith("aten::") else ""


FAMILIES: list[tuple[str, Callable[[str], bool]]] = [  # first match wins
    ("convolution fwd + bwd", lambda e: "convolution" in e or aten_name(e).startswith("conv")),
    ("batch norm fwd + bwd", lambda e: "batch_norm" in e),
    (FUSED_FAMILY, lambda e: any(m in e for m in FUSED_MARKERS)),
    (VECTOR_FAMILY, lambda e: any(m in e for m in VECTOR_MARKERS)),
    ("element-wise + reductions, op by op", lambda e: aten_name(e) in ELEMENTWISE),
    ("matrix products (cells, heads, fc)", lambda e: aten_name(e) in MATMUL),
    ("other (allocation, autograd, Python)", lambda e: True),
]


def family(event: str) -> str:
    return next(name for name, matches in FAMILIES if matches(event))


def profile_families(setup: StepSetup, steps: int = 3, warmup: int = 2) -> dict[str, tuple[float, float]]:
    """Per step: ``{family: (self milliseconds, calls)}`` over ``steps`` profiled training steps of
    ``setup`` after ``warmup`` unprofiled ones (which also compile the fused tails). On CUDA the
    device's self time is counted instead of the CPU's."""
    _, step = setup.build()
    for _ in range(warmup):
        step()
    cuda = torch.device(setup.device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
    totals = {name: [0.0, 0.0] for name, _ in FAMILIES}
    for event in prof.key_averages():
        self_us = event.self_device_time_total if cuda else event.self_cpu_time_total
        if self_us <= 0:
            continue
        entry = totals[family(event.key)]
        entry[0] += self_us / 1000.0 / steps
        entry[1] += event.count / steps
    return {name: (ms, calls) for name, (ms, calls) in totals.items()}


def profile_table(columns: dict[str, dict[str, tuple[float, float]]], baseline: str) -> list[list[str]]:
    """Rows ``family | each column 'ms (calls)' | extra ms of each column over the baseline``."""
    rows = []
    others = [c for c in columns if c != baseline]
    for name, _ in FAMILIES + [("total", None)]:
        def cell(col):
            fams = columns[col]
            if name == "total":
                return sum(ms for ms, _ in fams.values()), sum(n for _, n in fams.values())
            return fams[name]

        base_ms = cell(baseline)[0]
        rows.append([name] + [f"{cell(c)[0]:.0f} ({cell(c)[1]:.0f})" for c in columns]
                    + [f"{cell(c)[0] - base_ms:+.0f}" for c in others])
    return rows
