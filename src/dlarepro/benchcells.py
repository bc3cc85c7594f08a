"""The DSU cell's calls of one training step, torch's gates beside the native ones
(``bench/step_time.py --cells``).

DLA-L calls its stage's cell twice per block on ``[B, C]`` vectors (context from ``GAP(y)``, the
shortcut's refresh gate from ``GAP(s)``). DLA-B calls it once per block for the context and, from a
stage's second block on, once more on all ``2t`` earlier tokens (keys and pooled value maps). Each
call is the input path's small MLP (matrix products), the hidden path's (once per context state:
the calls that read one state share it) and the gate arithmetic after them, which the tails mode
``native`` runs in C++ (:class:`.models.native_vectors.DSUGates`). This benchmark replays those calls,
forward + backward, at each stage's width, with either gate path, interleaved round by round, after
checking that both give the same values and gradients.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .benchkernels import stage_shapes
from .models.cells import DSUCell
from .models.native_tails import library_ready
from .models.native_vectors import context_step, refresh_gates
from .native import BuildError


def stage_call_plan(method: str, blocks: int) -> list[tuple[int, bool]]:
    """One stage's cell calls in order: ``(tokens per image, whether it is a context call)``; ``0``
    tokens is a plain ``[B, C]`` call. Context calls keep their new state, refresh calls drop it."""
    if method == "dla_l":
        return [(0, True), (0, False)] * blocks
    if method == "dla_b":
        return [(0, True)] + [call for t in range(1, blocks) for call in ((0, True), (2 * t, False))]
    raise ValueError(f"no DSU calls to replay for {method!r}; choose dla_l or dla_b")


@dataclass
class CellTiming:
    method: str
    channels: int
    calls: int
    torch_ms: float
    native_ms: float
    difference: float  # largest |torch - native| over the outputs and every gradient


def stage_calls(method: str, blocks: int, batch: int, channels: int, seed: int = 0,
                cell: DSUCell | None = None) -> Callable[[bool], list[Tensor]]:
    """A function running one stage's cell calls forward + backward with the native gates or not;
    it returns the last output and every gradient (inputs and parameters). ``cell``: the DSU cell to
    call (default: a fresh one of ``channels``)."""
    generator = torch.Generator().manual_seed(seed)
    cell = DSUCell(channels) if cell is None else cell
    plan = stage_call_plan(method, blocks)
    inputs = [torch.randn(*((n,) if n else ()), batch, channels, generator=generator).requires_grad_()
              for n, _ in plan]

    def run(native: bool) -> list[Tensor]:
        state, hidden, total = cell.zero_state(inputs[0]), None, 0
        for x, (_, context) in zip(inputs, plan):  # the models' own calls (DLALight, DLABase.refresh)
            if context:
                state, hidden = context_step(cell, x, state, hidden, native)
                gate = state[0]
            else:
                gate = refresh_gates(cell, x, state, hidden, "per_image", native)
            total = total + gate.sum()
        leaves = [*inputs, *cell.parameters()]
        return [gate.detach(), *torch.autograd.grad(total + state[1].sum(), leaves)]

    return run


def time_cells(depth: int, batch: int, rounds: int = 9) -> list[CellTiming]:
    """Torch's and the native gates, each method, each stage; rounds interleaved, medians. Raises
    :class:`BuildError` where the native kernels do not build (timing torch against itself would mislead)."""
    if not library_ready():
        raise BuildError("the native kernels are not available here (the warning above says why)")
    timings = []
    for (_, channels, _, _), blocks in stage_shapes(depth, batch):
        for method in ("dla_l", "dla_b"):
            run = stage_calls(method, blocks, batch, channels)
            difference = max((a - b).abs().max().item() for a, b in zip(run(False), run(True)))
            spent: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(rounds + 1):  # the first round warms up
                for native in (False, True):
                    start = time.perf_counter()
                    run(native)
                    spent[native].append(time.perf_counter() - start)
            torch_ms, native_ms = (statistics.median(spent[n][1:]) * 1e3 for n in (False, True))
            timings.append(CellTiming(method, channels, len(stage_call_plan(method, blocks)), torch_ms, native_ms,
                                      difference))
    return timings


def cells_table(timings: list[CellTiming]) -> tuple[list[str], list[list[str]]]:
    headers = ["method", "channels", "cell calls per stage", "torch gates ms", "native gates ms", "x",
               "max abs. difference"]
    rows = [[t.method, str(t.channels), str(t.calls), f"{t.torch_ms:.2f}", f"{t.native_ms:.2f}",
             f"{t.native_ms / t.torch_ms:.2f}", f"{t.difference:.1e}"] for t in timings]
    return headers, rows


def per_step(timings: list[CellTiming]) -> dict[str, tuple[float, float]]:
    """``{method: (ms per step with torch's gates, ms with the native ones)}`` over the stages."""
    out: dict[str, tuple[float, float]] = {}
    for t in timings:
        torch_ms, native_ms = out.get(t.method, (0.0, 0.0))
        out[t.method] = (torch_ms + t.torch_ms, native_ms + t.native_ms)
    return out
