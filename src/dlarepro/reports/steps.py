"""The report's steps in order: ``aggregate`` hands its frames to ``claims``, the tables, the
figures and ``paper.tex`` (which read them back from ``results/<name>/`` when run on their own)."""

from __future__ import annotations

from typing import Callable, Sequence

from .aggregate import Frames, aggregate
from .context import Context
from .figurekit import write_figures
from .paper_tex import compile_paper, write_paper
from .tablekit import write_tables
from .verdicts import write_claims

Echo = Callable[[str], None]
ALL = ("aggregate", "claims", "tables", "figures", "paper")


def _aggregate(ctx: Context, frames: Frames | None, echo: Echo) -> Frames:
    return aggregate(ctx, echo=echo)


def _claims(ctx: Context, frames: Frames | None, echo: Echo) -> Frames:
    return write_claims(ctx, echo=echo, frames=frames)


def _tables(ctx: Context, frames: Frames | None, echo: Echo) -> Frames | None:
    write_tables(ctx, echo=echo, frames=frames)
    return frames


def _figures(ctx: Context, frames: Frames | None, echo: Echo) -> Frames | None:
    write_figures(ctx, echo=echo, frames=frames)
    return frames


def _paper(ctx: Context, frames: Frames | None, echo: Echo) -> Frames | None:
    write_paper(ctx, echo=echo, frames=frames)
    return frames


def _compile(ctx: Context, frames: Frames | None, echo: Echo) -> Frames | None:
    compile_paper(ctx, echo=echo)
    return frames


STEPS: dict[str, Callable[[Context, Frames | None, Echo], Frames | None]] = {
    "aggregate": _aggregate, "claims": _claims, "tables": _tables, "figures": _figures, "paper": _paper, "compile": _compile}


def run_steps(ctx: Context, steps: Sequence[str], echo: Echo = print) -> None:
    """Run ``steps`` (names of ``STEPS``) in order; later steps take the frames of ``aggregate``."""
    frames = None
    for step in steps:
        frames = STEPS[step](ctx, frames, echo)


def report_all(ctx: Context, compile: bool = False, echo: Echo = print) -> None:
    """aggregate, claims, tables, figures and paper.tex in order (and pdflatex when ``compile``)."""
    run_steps(ctx, ALL + (("compile",) if compile else ()), echo)
