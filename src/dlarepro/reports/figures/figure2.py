"""Figure 2: the stage-3 attention scores of ResNet-56 on CIFAR-100, static layer attention
(MRLA-B) beside dynamic (DLA-B), averaged over the seeds' ``attention_stage3.npz``.

The panels are the configs of the grid's ``figure2`` experiment; without one (run folders trained
by hand), every config whose runs captured attention, else the paper's two (shown as not run).

The caption states the figure's claim as numbers (:func:`dlarepro.claims.figure2_caption`): per
panel, how much each attention score changes across test images (std, averaged) and the entropy
of each row, mean ± std over seeds, from each run's per-image statistics.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ... import claims
from ..common import DATASET_NAMES, colour, method_name, method_order, method_title
from ..context import Context
from ..figurekit import WIDTH, not_run
from ..latex import tex_text
from ..registry import FigureSpec

DEFAULT_PANELS = {"dataset": "cifar100", "depth": 56, "archs": ["mrla_b", "dla_b"]}


def attention_means(ctx: Context, runs: pd.DataFrame, config_id: str) -> tuple[np.ndarray | None, int]:
    """Mean over seeds of the runs' stage-3 score matrices, and how many seeds went in."""
    mats = []
    for r in runs[(runs.config_id == config_id) & (runs.attention_scores != "")].itertuples(index=False):
        try:
            with np.load(ctx.index.runs[r.run_id].folder / r.attention_scores) as npz:
                mats.append(np.asarray(npz["scores"], dtype=float))
        except Exception:  # noqa: BLE001 - listed in problems.csv by aggregate; the figure skips it
            continue
    shapes = {m.shape for m in mats}
    if not mats or len(shapes) != 1:
        return None, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(mats), axis=0), len(mats)


def panels(ctx: Context) -> list[tuple[str, str, str, int, int]]:
    """(config id or '', arch, dataset, paper depth, trained depth) of each panel, in method order."""
    index = ctx.index
    if ctx.experiment(FIGURE.experiment) is not None:
        configs = [c for c in index.configs.values() if FIGURE.experiment in c.experiments]
    else:
        captured = {e.identity.config_id for e in index.runs.values() if e.capture_attention}
        configs = [index.configs[cid] for cid in sorted(captured)]
    if configs:
        order = method_order(c.arch for c in configs)
        configs.sort(key=lambda c: (order.index(c.arch), c.dataset, c.paper_depth))
        return [(c.config_id, c.arch, c.dataset, c.paper_depth, c.depth) for c in configs]
    d = DEFAULT_PANELS
    out = []
    for arch in d["archs"]:
        config = index.find(dataset=d["dataset"], arch=arch, paper_depth=d["depth"])
        out.append((config.config_id if config else "", arch, d["dataset"], d["depth"],
                    config.depth if config else ctx.trained_depth(d["depth"])))
    return out


def run_stats(ctx: Context, runs: pd.DataFrame, config_id: str) -> list[dict[str, float]]:
    """Each finished run's Figure 2 numbers (input std, row entropy, ...) from its attention file;
    runs whose file predates the per-image statistics are left out."""
    out = []
    for r in runs[(runs.config_id == config_id) & (runs.attention_scores != "")].itertuples(index=False):
        entry = ctx.index.runs.get(r.run_id)
        stats = claims.stats_from_file(entry.folder / r.attention_scores) if entry else None
        if stats is not None:
            out.append(stats)
    return out


def caption_numbers(ctx: Context, frames) -> str:
    """Figure 2's claim as numbers, per panel: mean ± std over seeds (LaTeX)."""
    per_panel = {}
    for cid, arch, dataset, paper_depth, _ in panels(ctx):
        name = f"{method_name(arch)}-{paper_depth}" + ("" if dataset == DEFAULT_PANELS["dataset"] else
                                                       f" ({DATASET_NAMES.get(dataset, dataset)})")
        per_panel[name] = run_stats(ctx, frames.runs, cid) if cid else []
    return tex_text(claims.figure2_caption(per_panel))


def build(ctx: Context, frames, synthetic: str):
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    shown = panels(ctx)
    means = [attention_means(ctx, frames.runs, cid) if cid else (None, 0) for cid, *_ in shown]
    vmax = max([float(np.nanmax(m)) for m, _ in means if m is not None] + [1e-9])
    cmap = colormaps["viridis"].with_extremes(bad="white")
    fig = Figure(figsize=(WIDTH, 3.4), layout="constrained")
    axes = fig.subplots(1, max(1, len(shown)), squeeze=False)[0]
    image = None
    for ax, (_, arch, dataset, paper_depth, depth), (matrix, n) in zip(axes, shown, means):
        trained = "" if depth == paper_depth else f" (trained {depth})"
        ax.set_title(f"{method_title(arch)}\n{DATASET_NAMES.get(dataset, dataset)}, ResNet-{paper_depth}{trained}"
                     + (f", {n} seed{'s' if n != 1 else ''}" if n else ""), color=colour(arch))
        missing = matrix is None
        if missing:  # an empty matrix of the stage's size keeps both panels alike
            size = max(1, (depth - 2) // 9) if dataset != "imagenet" else 1
            matrix = np.full((size, size), np.nan)
        size = matrix.shape[0]
        drawn = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0.0, vmax=vmax, aspect="equal")
        image = image if missing else drawn
        ticks = np.arange(size)
        step = max(1, size // 12)
        ax.set_xticks(ticks[::step])
        ax.set_xticklabels([str(t + 1) for t in ticks[::step]])
        ax.set_yticks(ticks[::step])
        ax.set_yticklabels([str(t + 1) for t in ticks[::step]])
        ax.set_xlabel("attended layer (key)")
        ax.set_ylabel("layer in stage 3 (query)")
        for side in ("top", "right"):
            ax.spines[side].set_visible(True)
        if missing:
            not_run(ax)
            continue
        if size <= 8:
            for i in range(size):
                for j in range(i + 1):
                    value = matrix[i, j]
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if value < 0.6 * vmax else "black")
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes), shrink=0.85)
        bar.set_label("mean attention score\n(over heads, test images, seeds)")
    fig.suptitle("Stage-3 attention scores" + (f" ({synthetic})" if synthetic else ""), fontsize=9)
    return fig


FIGURE = FigureSpec(
    "figure2", 2, "attention",
    r"Stage-3 attention scores of ResNet-56 on CIFAR-100 (paper's Figure~2): static layer attention "
    r"(MRLA-B) beside dynamic layer attention (DLA-B). Row $i$ holds the mean attention layer $i$ "
    r"pays to layers $1..i$ (mean over heads, test images and seeds).",
    build, experiment="figure2", inputs=("runs.csv",), caption_numbers=caption_numbers)
