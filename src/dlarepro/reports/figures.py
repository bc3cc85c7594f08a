"""The figures: ``reports/<profile>/figures/{figure4,figure2,cost}.{pdf,png}``.

- figure4: top-1 versus depth for ResNet, DIANet, MRLA-L and DLA-L on CIFAR-10 and CIFAR-100
  (mean and a ± std band over seeds; the paper's Table 1 values dashed when the data are real);
- figure2: the stage-3 attention scores of ResNet-56 on CIFAR-100, MRLA-B (static) beside DLA-B
  (dynamic), averaged over the seeds' ``attention_stage3.npz``;
- cost (beyond the paper): the measured median step time and the parameters versus depth.

Deterministic bytes: Agg-free ``Figure`` objects, fixed sizes and dpi, TrueType fonts (``pdf.fonttype``
42) and no dates or software names in the PDF/PNG metadata. Missing data never fails a figure:
the panel or the legend entry says *not run*.
"""

from __future__ import annotations

import io as _io
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from .. import grid as gridlib
from .. import paper
from .aggregate import read_outputs
from ..methods import METHODS as SPECS
from .common import DATASET_NAMES, Context, colour, method_names, write_if_changed

FIGURE_FILES = tuple(f"{stem}.{ext}" for stem in ("figure4", "figure2", "cost") for ext in ("pdf", "png"))
DPI = 150
WIDTH = 6.8  # inches: the text width of the report
RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "dla-repro", "font.family": "DejaVu Sans",
      "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
      "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": DPI,
      "savefig.dpi": DPI, "image.interpolation": "nearest", "path.simplify": False}
METADATA = {"pdf": {"CreationDate": None, "Creator": None, "Producer": None}, "png": {"Software": None}}
FIGURE4_DEFAULT = {"datasets": ["cifar10", "cifar100"], "depths": [20, 56, 110],
                   "archs": ["none", "dia", "mrla_l", "dla_l"]}
FIGURE2_DEFAULT = {"dataset": "cifar100", "depth": 56, "archs": ["mrla_b", "dla_b"]}


def render(fig) -> dict[str, bytes]:
    """The figure as PDF and PNG bytes, free of dates and version strings."""
    out = {}
    for ext in ("pdf", "png"):
        buf = _io.BytesIO()
        fig.savefig(buf, format=ext, dpi=DPI, metadata=METADATA[ext])
        out[ext] = buf.getvalue()
    return out


def _not_run(ax, text: str = "not run", ticks: bool = True) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10, color="0.35",
            style="italic", bbox=dict(boxstyle="round,pad=0.4", fc="white", ec="0.7", lw=0.6))
    if not ticks:
        ax.set_xticks([])
        ax.set_yticks([])


def _experiment_axes(ctx: Context, name: str) -> dict[str, list]:
    """The datasets, depths and archs an experiment declares (union over its groups)."""
    groups = ctx.grid["experiments"].get(name) or []
    out: dict[str, list] = {"datasets": [], "depths": [], "archs": []}
    for g in groups:
        for key in out:
            out[key] += [v for v in g[key] if v not in out[key]]
    return out


def _synthetic_title(ctx: Context, frames: Iterable[pd.DataFrame]) -> str:
    synthetic = ctx.synthetic_profile or any(
        "synthetic" in f and f["synthetic"].astype(str).str.lower().eq("true").any() for f in frames)
    return "synthetic data — pipeline check, not a reproduction" if synthetic else ""


# ---------------------------------------------------------------------------------------------


def figure4(ctx: Context, data: pd.DataFrame, synthetic: str):
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    axes_spec = _experiment_axes(ctx, "figure4") if "figure4" in ctx.grid["experiments"] else FIGURE4_DEFAULT
    archs = [a for a in SPECS if a in axes_spec["archs"]]
    depths = sorted(axes_spec["depths"])
    published = paper.load_table(1)
    fig = Figure(figsize=(WIDTH, 3.2), layout="constrained")
    axes = fig.subplots(1, len(axes_spec["datasets"]), squeeze=False)[0]
    handles = {}
    for ax, dataset in zip(axes, axes_spec["datasets"]):
        ran = data[data.dataset == dataset]
        for arch in archs:
            shade = colour(arch)
            d = ran[ran.arch == arch].sort_values("depth")
            if len(d):
                mean, std = d["mean"].to_numpy(float), np.nan_to_num(d["std"].to_numpy(float))
                (line,) = ax.plot(d.depth, mean, "-o", color=shade, ms=3.5, lw=1.4)
                ax.fill_between(d.depth, mean - std, mean + std, color=shade, alpha=0.18, lw=0)
                handles.setdefault(arch, line)
            if not synthetic:
                p = published[(published.dataset == dataset) & (published.arch == arch)].sort_values("depth")
                if len(p):
                    ax.plot(p.depth, p.top1_mean, "--", marker="o", mfc="none", color=shade, ms=3, lw=0.9,
                            alpha=0.8)
        if ran.empty:
            _not_run(ax, "ours: not run" if not synthetic else "not run")
        ax.set_title(f"({'ab'[list(axes).index(ax)]}) {DATASET_NAMES.get(dataset, dataset)}")
        ax.set_xticks(depths)
        mapped = any(ctx.trained_depth(d) != d for d in depths)
        ax.set_xticklabels([f"{d}\n({ctx.trained_depth(d)})" if mapped else str(d) for d in depths])
        ax.set_xlim(min(depths) - 0.08 * (max(depths) - min(depths) or 10),
                    max(depths) + 0.08 * (max(depths) - min(depths) or 10))
        ax.set_xlabel("depth (trained depth)" if mapped else "depth")
        ax.set_ylabel("top-1 accuracy (%), best epoch")
        ax.grid(True, lw=0.4, alpha=0.5)
    entries = [Line2D([], [], color=colour(a), marker="o", ms=3.5, lw=1.4) for a in archs]
    labels = [method_names()[a] + ("" if a in handles else " (not run)") for a in archs]
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


def attention_means(ctx: Context, runs: pd.DataFrame, config_id: str) -> tuple[np.ndarray | None, int]:
    """Mean over seeds of the runs' stage-3 score matrices, and how many seeds went in."""
    mats = []
    for r in runs[(runs.config_id == config_id) & (runs.attention_scores != "")].itertuples(index=False):
        try:
            with np.load(ctx.runs_dir / r.run_id / r.attention_scores) as npz:
                mats.append(np.asarray(npz["scores"], dtype=float))
        except Exception:  # noqa: BLE001 - listed in problems.csv by aggregate; the figure skips it
            continue
    shapes = {m.shape for m in mats}
    if not mats or len(shapes) != 1:
        return None, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(mats), axis=0), len(mats)


def figure2(ctx: Context, runs: pd.DataFrame, synthetic: str):
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    if "figure2" in ctx.grid["experiments"]:
        declared = gridlib.runs_of(ctx.grid, "figure2", ctx.profile)
        seen: dict[str, gridlib.Run] = {}
        for r in declared:
            seen.setdefault(r.config_id, r)
        panels = sorted(seen.values(), key=lambda r: (list(SPECS).index(r.arch), r.dataset, r.paper_depth))
        panels = [(r.config_id, r.arch, r.dataset, r.paper_depth, r.depth) for r in panels]
    else:
        f = FIGURE2_DEFAULT
        panels = [(ctx.config_id(f["dataset"], a, f["depth"]), a, f["dataset"], f["depth"],
                   ctx.trained_depth(f["depth"])) for a in f["archs"]]
    means = [attention_means(ctx, runs, cid) for cid, *_ in panels]
    vmax = max([float(np.nanmax(m)) for m, _ in means if m is not None] + [1e-9])
    cmap = colormaps["viridis"].with_extremes(bad="white")
    fig = Figure(figsize=(WIDTH, 3.4), layout="constrained")
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    image = None
    for ax, (cid, arch, dataset, paper_depth, depth), (matrix, n) in zip(axes, panels, means):
        name = SPECS[arch].title() if arch in SPECS else arch
        trained = "" if depth == paper_depth else f" (trained {depth})"
        ax.set_title(f"{name}\n{DATASET_NAMES.get(dataset, dataset)}, ResNet-{paper_depth}{trained}"
                     + (f", {n} seed{'s' if n != 1 else ''}" if n else ""), color=colour(arch))
        missing = matrix is None
        if missing:  # an empty matrix of the stage's size keeps both panels alike
            size = max(1, (depth - 2) // 9) if dataset != "imagenet" else 1
            matrix = np.full((size, size), np.nan)
        size = matrix.shape[0]
        shown = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0.0, vmax=vmax, aspect="equal")
        image = image if missing else shown
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
            _not_run(ax)
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


def cost(ctx: Context, summary: pd.DataFrame, runs: pd.DataFrame, synthetic: str):
    """Measured median step time and parameters versus the trained depth, per method."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    plain = summary[(summary.knobs == "") & (summary.n_seeds > 0) & summary.arch.isin(list(SPECS))]
    dataset = "cifar100" if (plain.dataset == "cifar100").any() else (
        plain.dataset.iloc[0] if len(plain) else "cifar100")
    d = plain[plain.dataset == dataset]
    fig = Figure(figsize=(WIDTH, 3.2), layout="constrained")
    ax_time, ax_params = fig.subplots(1, 2)
    archs = [a for a in SPECS if a in set(summary.arch)] or list(SPECS)
    for arch in archs:
        m = d[d.arch == arch].sort_values("depth")
        if m.empty:
            continue
        style = dict(color=colour(arch), marker="o", ms=3.5, lw=1.4)
        ax_time.plot(m.depth, m.step_seconds_median * 1000.0, **style)
        ax_params.plot(m.depth, m.params / 1e6, **style)
    depths = sorted(set(d.depth)) if len(d) else []
    for ax, label in ((ax_time, "median training step (ms)"), (ax_params, "parameters (M)")):
        if d.empty:
            _not_run(ax, ticks=False)
        else:
            ax.set_xticks(depths)
        ax.set_xlabel("depth (as trained)")
        ax.set_ylabel(label)
        ax.grid(True, lw=0.4, alpha=0.5)
    used = runs[runs.dataset == dataset] if len(runs) else runs
    machine = ""
    if len(used):
        devices = sorted({f"{r.device}, {int(r.threads)} thread{'s' if int(r.threads) != 1 else ''}"
                          for r in used.itertuples(index=False)})
        machine = "; ".join(devices)
    ax_time.set_title("(a) step time" + (f" [{machine}]" if machine else ""))
    ax_params.set_title("(b) parameters")
    present = set(d.arch)
    entries = [Line2D([], [], color=colour(a), marker="o", ms=3.5, lw=1.4) for a in archs]
    labels = [method_names()[a] + ("" if a in present else " (not run)") for a in archs]
    fig.legend(entries, labels, loc="outside lower center", ncol=4, frameon=False, handlelength=1.8)
    fig.suptitle(f"Measured cost on {DATASET_NAMES.get(dataset, dataset)}" + (f" ({synthetic})" if synthetic else ""),
                 fontsize=9)
    return fig


def build_figures(ctx: Context, runs: pd.DataFrame, summary: pd.DataFrame, figure4_data: pd.DataFrame
                  ) -> dict[str, Any]:
    import matplotlib

    synthetic = _synthetic_title(ctx, [runs])
    with matplotlib.rc_context(RC):
        figs = {"figure4": figure4(ctx, figure4_data, synthetic), "figure2": figure2(ctx, runs, synthetic),
                "cost": cost(ctx, summary, runs, synthetic)}
        return {name: render(fig) for name, fig in figs.items()}


def write_figures(ctx: Context, echo: Callable[[str], None] = print) -> list[Path]:
    """Write ``reports/<profile>/figures/*.{pdf,png}`` (only files whose bytes changed)."""
    runs, summary = read_outputs(ctx)
    path = ctx.results_dir / "figure4.csv"
    data = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["dataset", "arch", "depth", "mean", "std"])
    out = ctx.reports_dir / "figures"
    written = []
    for name, files in build_figures(ctx, runs, summary, data).items():
        for ext, blob in files.items():
            if write_if_changed(out / f"{name}.{ext}", blob):
                written.append(out / f"{name}.{ext}")
    echo(f"figures: {len(written)} of {len(FIGURE_FILES)} written to {out} (the rest unchanged)")
    return written
