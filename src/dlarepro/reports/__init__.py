"""Reports of a profile's runs (``dla-repro report ...``):

- ``aggregate_runs``: ``results/<profile>/{runs,summary,problems}.csv``, ``headline.json``, ``figure4.csv``;
- ``write_tables``: ``reports/<profile>/tables/table1..6.tex`` and ``params.tex``;
- ``write_figures``: ``reports/<profile>/figures/{figure4,figure2,cost}.{pdf,png}``;
- ``write_paper`` / ``compile_paper``: ``reports/<profile>/paper.tex`` and ``paper.pdf``.

Every output is written atomically and only when its bytes change.
"""

from __future__ import annotations

from typing import Callable

from .aggregate import aggregate as aggregate_runs  # the name ``aggregate`` is the submodule
from .common import Context, ReportError
from .figures import write_figures
from .paper_tex import compile_paper, write_paper
from .tables import write_tables

__all__ = ["Context", "ReportError", "aggregate_runs", "compile_paper", "report_all", "write_figures", "write_paper",
           "write_tables"]


def report_all(ctx: Context, compile: bool = False, echo: Callable[[str], None] = print) -> None:
    """aggregate, tables, figures and paper.tex in order (and pdflatex when ``compile``)."""
    aggregate_runs(ctx, echo=echo)
    write_tables(ctx, echo=echo)
    write_figures(ctx, echo=echo)
    write_paper(ctx, echo=echo)
    if compile:
        compile_paper(ctx, echo=echo)
