"""The bytes a training step must move, by operator family (``bench/step_time.py --traffic``).

On a few CPU cores a step of these networks is bound by memory bandwidth, so the bytes its
operators read and write predict its time better than its MACs do (README, benchmark). Unlike the
time, the count is exact and repeatable: it shows what a change of the tails saves without the
noise of a shared machine.

The rule: every ATen operator reads each distinct input tensor once and writes each output once
(views and allocations move nothing); batch norm's forward in training and its backward read their
inputs twice, since the statistics or sums must be complete before the second pass. A fused tail
kernel (:class:`.models.tail_kernels.Kernel`) counts as one operator, its ``reread`` inputs twice:
what its arithmetic needs, whatever code the compiler generates for it. A native kernel call (the
tails mode ``native``: C++ behind ctypes, which no dispatch mode sees) counts as one operator too,
each map it streams once per pass that reads or writes it, as the call reports
(:func:`.models.native_tails.streamed`). The count is a floor per operator: libraries may move more
(a convolution's workspace), never less.
"""

from __future__ import annotations

import functools
import inspect
from collections import Counter
from typing import Any, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten

from .bench import StepSetup
from .benchprofile import FAMILIES, FUSED_FAMILY, VECTOR_FAMILY, family
from .models import native_tails, tail_kernels

#: ATen ops (names without the in-place underscore) that read their inputs in two passes
TWO_PASS = {"native_batch_norm", "_native_batch_norm_legit", "native_batch_norm_backward"}
#: ops that allocate without writing
ALLOCATIONS = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}


def tensor_bytes(values: Iterable[Any]) -> int:
    """Bytes of the distinct tensors among ``values`` (a view counts what it spans)."""
    seen, total = set(), 0
    for t in values:
        if isinstance(t, torch.Tensor):
            key = (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)
            if key not in seen:
                seen.add(key)
                total += t.numel() * t.element_size()
    return total


@functools.cache
def reread_positions(kernel: tail_kernels.Kernel) -> frozenset[int]:
    names = list(inspect.signature(kernel.fn).parameters)
    return frozenset(names.index(name) for name in kernel.reread)


class TrafficCount(TorchDispatchMode):
    """Counts bytes read and written per operator family while active; fused tail kernels are run
    by it (eagerly, their own ops not counted) and counted as one operator each."""

    def __init__(self):
        super().__init__()
        self.bytes: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__.rstrip("_")
        if func.is_view or name in ALLOCATIONS:
            return out
        inputs = tensor_bytes(tree_flatten((args, kwargs))[0])
        moved = inputs * (2 if name in TWO_PASS else 1) + tensor_bytes(tree_flatten(out)[0])
        self.add(family(f"aten::{name}"), moved)
        return out

    def run_kernel(self, kernel: tail_kernels.Kernel, args: tuple) -> Any:
        with _disable_current_modes():  # the kernel's own ops are its business, not counted one by one
            out = kernel.fn(*args)
        twice = reread_positions(kernel)
        reread = [a for i, a in enumerate(args) if i in twice]
        read = tensor_bytes(tree_flatten(list(args))[0]) + tensor_bytes(tree_flatten(reread)[0])  # lists of maps too
        self.add(FUSED_FAMILY, read + tensor_bytes(tree_flatten(out)[0]))
        return out

    def run_native(self, tensors: list[torch.Tensor], vectors: bool) -> None:
        self.add(VECTOR_FAMILY if vectors else FUSED_FAMILY, sum(t.numel() * t.element_size() for t in tensors))

    def add(self, family_name: str, moved: int) -> None:
        self.bytes[family_name] += moved
        self.calls[family_name] += 1

    def __enter__(self):
        tail_kernels.Kernel.observer = self.run_kernel
        native_tails.traffic_observer = self.run_native
        return super().__enter__()

    def __exit__(self, *exc):
        tail_kernels.Kernel.observer = None
        native_tails.traffic_observer = None
        return super().__exit__(*exc)


def step_traffic(setup: StepSetup) -> dict[str, tuple[float, float]]:
    """``{family: (bytes, operator calls)}`` of one training step of ``setup`` (after one step
    uncounted, so optimizer state exists as in every later step)."""
    _, step = setup.build()
    step()
    count = TrafficCount()
    with count:
        step()
    return {name: (float(count.bytes[name]), float(count.calls[name])) for name, _ in FAMILIES}


def traffic_table(columns: dict[str, dict[str, tuple[float, float]]], baseline: str) -> list[list[str]]:
    """Rows ``family | GiB (calls) of each column``, a total row and each total's ratio to ``baseline``."""
    gib = lambda b: f"{b / 2**30:.2f}"
    rows = [[name] + [f"{gib(col[name][0])} ({col[name][1]:.0f})" for col in columns.values()] for name, _ in FAMILIES]
    totals = {label: sum(b for b, _ in col.values()) for label, col in columns.items()}
    rows.append(["total"] + [gib(t) for t in totals.values()])
    rows.append([f"x {baseline}"] + [f"{t / totals[baseline]:.2f}" for t in totals.values()])
    return rows
