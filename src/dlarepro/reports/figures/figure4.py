"""Figure 4: top-1 versus depth on CIFAR-10 and CIFAR-100, one line per method (mean and a ± std
band over seeds; the paper's Table 1 values dashed when the data are real).

Its points are the plain model (knobs the paper varies at their defaults) of every method of the
grid's ``figure4`` experiment, or, without one (run folders trained by hand), of every CIFAR
method that has runs; they are written to ``figure4.csv`` (DVC plots data) by ``report aggregate``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ... import paper
from ...grid import CIFAR
from ..common import DATASET_NAMES, colour, method_name, method_order
from ..context import Context
from ..figurekit import WIDTH, experiment_axes, not_run
from ..registry import FigureSpec
from ..schema import FLOAT, INT, columns

#: what the figure shows without a ``figure4`` experiment (the paper's panels); methods with runs are added
DEFAULT_AXES = {"datasets": ["cifar10", "cifar100"], "depths": [20, 56, 110], "archs": ["none", "dia", "mrla_l", "dla_l"]}
SCHEMA = columns("dataset", "method", "arch", ("depth", INT), ("trained_depth", INT), ("n", INT), ("mean", FLOAT),
                 ("std", FLOAT), ("final_mean", FLOAT))


def data(ctx: Context, summary: pd.DataFrame) -> list[dict]:
    """Mean and std of best top-1 per (dataset, method, paper depth) with finished runs."""
    stats = summary.set_index("config_id")
    configs = [c for c in ctx.index.plain(FIGURE.experiment) if c.dataset in CIFAR and c.config_id in stats.index]
    order = {a: i for i, a in enumerate(method_order(c.arch for c in configs))}
    rows = []
    for c in sorted(configs, key=lambda c: (c.dataset, order[c.arch], c.paper_depth)):
        s = stats.loc[c.config_id]
        if s.n_seeds == 0:
            continue
        rows.append({"dataset": c.dataset, "method": method_name(c.arch), "arch": c.arch, "depth": c.paper_depth,
                     "trained_depth": c.depth, "n": int(s.n_seeds), "mean": round(s.best_top1_mean, 4),
                     "std": round(s.best_top1_std, 4), "final_mean": round(s.final_top1_mean, 4)})
    return rows


def _union(*lists) -> list:
    return list(dict.fromkeys(v for values in lists for v in values))


def build(ctx: Context, frames, synthetic: str):
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    points = frames.data[FIGURE.data_file]
    declared = experiment_axes(ctx, FIGURE.experiment) or DEFAULT_AXES
    datasets = _union(declared["datasets"], points.dataset)
    archs = method_order(_union(declared["archs"], points.arch))
    depths = sorted(_union(declared["depths"], points.depth))
    published = paper.load_table(1)
    fig = Figure(figsize=(WIDTH, 3.2), layout="constrained")
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    drawn = set()
    for i, (ax, dataset) in enumerate(zip(axes, datasets)):
        ran = points[points.dataset == dataset]
        for arch in archs:
            shade = colour(arch)
            d = ran[ran.arch == arch].sort_values("depth")
            if len(d):
                mean, std = d["mean"].to_numpy(float), np.nan_to_num(d["std"].to_numpy(float))
                ax.plot(d.depth, mean, "-o", color=shade, ms=3.5, lw=1.4)
                ax.fill_between(d.depth, mean - std, mean + std, color=shade, alpha=0.18, lw=0)
                drawn.add(arch)
            if not synthetic:
                p = published[(published.dataset == dataset) & (published.arch == arch)].sort_values("depth")
                if len(p):
                    ax.plot(p.depth, p.top1_mean, "--", marker="o", mfc="none", color=shade, ms=3, lw=0.9,
                            alpha=0.8)
        if ran.empty:
            not_run(ax, "ours: not run" if not synthetic else "not run")
        ax.set_title(f"({chr(ord('a') + i)}) {DATASET_NAMES.get(dataset, dataset)}")
        ax.set_xticks(depths)
        mapped = any(ctx.trained_depth(d) != d for d in depths)
        ax.set_xticklabels([f"{d}\n({ctx.trained_depth(d)})" if mapped else str(d) for d in depths])
        span = max(depths) - min(depths) or 10
        ax.set_xlim(min(depths) - 0.08 * span, max(depths) + 0.08 * span)
        ax.set_xlabel("depth (trained depth)" if mapped else "depth")
        ax.set_ylabel("top-1 accuracy (%), best epoch")
        ax.grid(True, lw=0.4, alpha=0.5)
    entries = [Line2D([], [], color=colour(a), marker="o", ms=3.5, lw=1.4) for a in archs]
    labels = [method_name(a) + ("" if a in drawn else " (not run)") for a in archs]
    if not synthetic:
        entries += [Line2D([], [], color="0.3", lw=1.4), Line2D([], [], color="0.3", ls="--", lw=0.9)]
        labels += ["ours: mean ± std", "paper (Table 1)"]
    else:
        entries += [Line2D([], [], color="0.3", lw=1.4)]
        labels += ["mean ± std over seeds"]
    fig.legend(entries, labels, loc="outside lower center", ncol=len(labels) if len(labels) <= 5 else 4,
               frameon=False, handlelength=1.8)
    fig.suptitle("Top-1 accuracy versus depth" + (f" ({synthetic})" if synthetic else ""), fontsize=9)
    return fig


FIGURE = FigureSpec(
    "figure4", 4, "cifar",
    r"Top-1 accuracy versus depth on CIFAR-10 and CIFAR-100 for the methods of the figure4 experiment "
    r"(paper's Figure~4: ResNet, DIANet, MRLA-L and DLA-L): mean (line) and $\pm$ one sample std (band) of the best top-1 over seeds; "
    r"dashed: the paper's Table~1 values (shown for real data only). A method or panel without "
    r"finished runs is marked \textit{not run}.",
    build, experiment="figure4", inputs=("figure4.csv",), data_file="figure4.csv", data=data, data_schema=SCHEMA)
