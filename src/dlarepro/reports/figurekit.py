"""What the figure builders share, and the writer of ``reports/<profile>/figures/*.{pdf,png}``.

Each figure is one module of :mod:`dlarepro.reports.figures` (see :mod:`dlarepro.reports.registry`).
Deterministic bytes: Agg-free ``Figure`` objects, fixed sizes and dpi, TrueType fonts
(``pdf.fonttype`` 42) and no dates or software names in the PDF/PNG metadata. Missing data never
fails a figure: the panel or the legend entry says *not run*.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from . import registry
from .aggregate import Frames, read_outputs
from .common import write_if_changed
from .context import Context

DPI = 150
WIDTH = 6.8  # inches: the text width of the report
RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "dla-repro", "font.family": "DejaVu Sans",
      "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
      "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": DPI,
      "savefig.dpi": DPI, "image.interpolation": "nearest", "path.simplify": False}
METADATA = {"pdf": {"CreationDate": None, "Creator": None, "Producer": None}, "png": {"Software": None}}
SYNTHETIC_TITLE = "synthetic data — pipeline check, not a reproduction"


def render(fig) -> dict[str, bytes]:
    """The figure in every format of the registry, free of dates and version strings."""
    out = {}
    for ext in registry.FIGURE_FORMATS:
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=DPI, metadata=METADATA[ext])
        out[ext] = buf.getvalue()
    return out


def not_run(ax, text: str = "not run", ticks: bool = True) -> None:
    """Mark an empty panel."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10, color="0.35",
            style="italic", bbox=dict(boxstyle="round,pad=0.4", fc="white", ec="0.7", lw=0.6))
    if not ticks:
        ax.set_xticks([])
        ax.set_yticks([])


def experiment_axes(ctx: Context, name: str) -> dict[str, list] | None:
    """The datasets, depths and archs an experiment of the grid declares (union over its groups);
    None when there is no such experiment (or no grid)."""
    groups = ctx.experiment(name)
    if groups is None:
        return None
    out: dict[str, list] = {"datasets": [], "depths": [], "archs": []}
    for g in groups:
        for key in out:
            out[key] += [v for v in g[key] if v not in out[key]]
    return out


def synthetic_title(ctx: Context, frames: Iterable[pd.DataFrame]) -> str:
    synthetic = ctx.synthetic_profile or any("synthetic" in f and f["synthetic"].any() for f in frames)
    return SYNTHETIC_TITLE if synthetic else ""


def build_figures(ctx: Context, frames: Frames) -> dict[str, dict[str, bytes]]:
    """Every figure of the registry as bytes per format."""
    import matplotlib

    synthetic = synthetic_title(ctx, [frames.runs])
    with matplotlib.rc_context(RC):
        return {name: render(spec.build(ctx, frames, synthetic)) for name, spec in registry.figures().items()}


def draw(ctx: Context, frames: Frames, name: str) -> Any:
    """One figure as a matplotlib ``Figure`` (to inspect what it draws: legends, lines)."""
    import matplotlib

    with matplotlib.rc_context(RC):
        return registry.figures()[name].build(ctx, frames, synthetic_title(ctx, [frames.runs]))


def write_figures(ctx: Context, echo: Callable[[str], None] = print, frames: Frames | None = None) -> list[Path]:
    """Write ``reports/<profile>/figures/*`` (only files whose bytes changed). ``frames``: the
    aggregate in memory (``report all``); read from ``results/<profile>/`` otherwise."""
    frames = frames if frames is not None else read_outputs(ctx)
    out = ctx.reports_dir / "figures"
    written = []
    figures = build_figures(ctx, frames)
    for name, files in figures.items():
        for ext, blob in files.items():
            if write_if_changed(out / f"{name}.{ext}", blob):
                written.append(out / f"{name}.{ext}")
    total = sum(len(files) for files in figures.values())
    echo(f"figures: {len(written)} of {total} written to {out} (the rest unchanged)")
    return written
