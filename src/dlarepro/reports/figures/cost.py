"""The cost figure (beyond the paper): measured median training-step time and parameter count of
every method that has runs versus the depth actually trained, on CIFAR-100 when it has runs."""

from __future__ import annotations

import pandas as pd

from ..common import DATASET_NAMES, colour, method_name, method_order
from ..context import Context
from ..figurekit import WIDTH, not_run
from ..registry import FigureSpec
from ...methods import METHODS

PREFERRED_DATASET = "cifar100"


def machine_words(runs: pd.DataFrame) -> str:
    """'cpu, 1 thread; cuda:0, 8 threads': where the runs measured their step time."""
    devices = set()
    for r in runs.itertuples(index=False):
        threads = "" if pd.isna(r.threads) else f", {int(r.threads)} thread{'s' if int(r.threads) != 1 else ''}"
        devices.add(f"{r.device}{threads}")
    return "; ".join(sorted(devices))


def build(ctx: Context, frames, synthetic: str):
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    summary, runs = frames.summary, frames.runs
    plain_ids = {c.config_id for c in ctx.index.plain()}
    plain = summary[summary.config_id.isin(plain_ids) & (summary.n_seeds > 0)]
    dataset = PREFERRED_DATASET if (plain.dataset == PREFERRED_DATASET).any() else (
        plain.dataset.iloc[0] if len(plain) else PREFERRED_DATASET)
    d = plain[plain.dataset == dataset]
    fig = Figure(figsize=(WIDTH, 3.2), layout="constrained")
    ax_time, ax_params = fig.subplots(1, 2)
    archs = method_order(summary.arch) or list(METHODS)
    for arch in archs:
        m = d[d.arch == arch].sort_values("depth")
        if m.empty:
            continue
        style = dict(color=colour(arch), marker="o", ms=3.5, lw=1.4)
        ax_time.plot(m.depth, m.step_seconds_median * 1000.0, **style)
        ax_params.plot(m.depth, m.params.to_numpy(dtype=float, na_value=float("nan")) / 1e6, **style)
    depths = sorted(set(d.depth)) if len(d) else []
    for ax, label in ((ax_time, "median training step (ms)"), (ax_params, "parameters (M)")):
        if d.empty:
            not_run(ax, ticks=False)
        else:
            ax.set_xticks(depths)
        ax.set_xlabel("depth (as trained)")
        ax.set_ylabel(label)
        ax.grid(True, lw=0.4, alpha=0.5)
    machine = machine_words(runs[runs.dataset == dataset])
    ax_time.set_title("(a) step time" + (f" [{machine}]" if machine else ""))
    ax_params.set_title("(b) parameters")
    present = set(d.arch)
    entries = [Line2D([], [], color=colour(a), marker="o", ms=3.5, lw=1.4) for a in archs]
    labels = [method_name(a) + ("" if a in present else " (not run)") for a in archs]
    fig.legend(entries, labels, loc="outside lower center", ncol=4, frameon=False, handlelength=1.8)
    fig.suptitle(f"Measured cost on {DATASET_NAMES.get(dataset, dataset)}" + (f" ({synthetic})" if synthetic else ""),
                 fontsize=9)
    return fig


FIGURE = FigureSpec(
    "cost", 5, "cost",
    r"Beyond the paper: measured median training-step time and parameter count of every method "
    r"versus the depth actually trained (CIFAR-100 runs; the machine is named in the panel title).",
    build, inputs=("summary.csv", "runs.csv"))
