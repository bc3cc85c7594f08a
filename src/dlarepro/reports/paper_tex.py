"""``reports/<profile>/paper.tex``: one LaTeX document with every table and figure (relative paths),
and its compilation with pdflatex into ``paper.pdf``.

The compilation runs in a temporary folder next to the document, with ``SOURCE_DATE_EPOCH`` fixed
and pdfTeX's dates and trailer id switched off, so the same sources give the same PDF bytes. Any
LaTeX error fails with the error lines of the log (``-halt-on-error``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from . import registry
from .aggregate import Frames, read_outputs
from .common import BEST_NOTE, SYNTHETIC_NOTE, ReportError, write_if_changed
from .context import Context
from .latex import tex_escape
from .registry import SECTIONS, FigureSpec, TableSpec
from .verdicts import claims_of

INSTALL_HINT = "run scripts/install-latex.sh (as root) to install pdflatex and pdftoppm"
MAX_PASSES = 4
RERUN = re.compile(r"Rerun to get|Rerun LaTeX|Table widths have changed|Label\(s\) may have changed")

PREAMBLE = r"""\documentclass[10pt,a4paper]{article}
\ifdefined\pdftrailerid \pdftrailerid{}\fi
\ifdefined\pdfinfoomitdate \pdfinfoomitdate=1\fi
\ifdefined\pdfsuppressptexinfo \pdfsuppressptexinfo=-1\fi
\usepackage[utf8]{inputenc}
\usepackage[margin=2cm]{geometry}
\usepackage{amsmath}
\usepackage{booktabs}
\usepackage{multirow}
\usepackage{longtable}
\usepackage{array}
\usepackage{graphicx}
\usepackage{caption}
\usepackage{float}
\usepackage{pdflscape}
\captionsetup{font=small,labelfont=bf}
\setlength{\LTcapwidth}{\textwidth}
"""


def status_text(ctx: Context, frames: Frames) -> str:
    runs, problems = frames.runs, frames.problems
    finished, expected = len(runs), len(ctx.index.runs)
    synthetic = ctx.synthetic_profile or bool(len(runs) and runs["synthetic"].any())
    description = ctx.settings.get("description", "")
    declared = "runs its grid declares" if ctx.from_grid else "runs found in the folders given to \\texttt{--runs}"
    lines = [f"This report describes {ctx.source_words}"
             + (f" ({tex_escape(description)})" if description else "")
             + f": {finished} of the {expected} {declared} have finished; every table and figure "
               "below is computed from them, and a row or panel without finished runs says \\textit{not run}."]
    if synthetic:
        depth = ctx.depth_note(sorted(ctx.depth_map)) if ctx.depth_map else ""
        lines.append(r"\textbf{" + SYNTHETIC_NOTE.capitalize() + ".} The runs were trained on generated stand-in "
                     "data" + (f"; {depth}" if depth else "") + ", so the accuracies say nothing about the paper.")
    lines.append(BEST_NOTE + ".")
    verdicts = claims_sentence(ctx, frames)
    if verdicts:
        lines.append(verdicts)
    if len(problems):
        lines.append(f"{len(problems)} run folder{'s are' if len(problems) != 1 else ' is'} unfinished, corrupt, "
                     "duplicated or outside the grid and left out (\\texttt{results/" + tex_escape(ctx.profile)
                     + "/problems.csv}):")
        shown = problems.head(20)
        items = "".join(f"\\item \\texttt{{{tex_escape(p.run_id)}}}: {tex_escape(p.status)} --- "
                        f"{tex_escape(p.detail)}\n" for p in shown.itertuples(index=False))
        more = f"\\item \\ldots\\ and {len(problems) - len(shown)} more\n" if len(problems) > len(shown) else ""
        lines.append("\\begin{itemize}\\small\n" + items + more + "\\end{itemize}")
    # run ids and paths in \texttt do not hyphenate: let the spaces stretch rather than run into the margin
    return "\\begin{sloppypar}\n" + "\n\n".join(lines) + "\n\\end{sloppypar}"


def claims_sentence(ctx: Context, frames: Frames) -> str:
    """How the paper's claims fare (Table~\\ref{tab:claims}), once ``report claims`` has run."""
    from .. import claims

    try:
        counts = claims.counts(claims_of(ctx, frames))
    except ReportError:
        return ""  # no claims.csv yet: the tables step says what to run
    return (f"Of the paper's {counts['claims']} quantitative claims (Table~\\ref{{tab:claims}}): "
            + ", ".join(f"{counts[v]} {v}" for v in claims.VERDICTS)
            + f"; {counts['published_fails']} disagree with the paper's own tables.")


def figure(spec: FigureSpec, numbers: str = "") -> str:
    """A figure's float; ``numbers``: what its ``caption_numbers`` adds to the caption."""
    caption = spec.caption + (" " + numbers if numbers else "")
    return (f"\\setcounter{{figure}}{{{spec.number - 1}}}\n\\begin{{figure}}[H]\n\\centering\n"
            f"\\includegraphics[width=\\linewidth]{{figures/{spec.name}.pdf}}\n"
            f"\\caption{{{caption}}}\n\\label{{fig:{spec.name}}}\n\\end{{figure}}\n")


def table(spec: TableSpec, turned: bool = True) -> str:
    """The table's ``\\input``; a ``landscape`` table on its own sideways page unless ``turned`` is
    False (its section's page is turned already)."""
    text = f"\\setcounter{{table}}{{{spec.number - 1}}}\n\\input{{tables/{spec.name}}}\n"
    return f"\\begin{{landscape}}\n{text}\\end{{landscape}}\n" if spec.landscape and turned else text


def sections(ctx: Context | None = None, frames: Frames | None = None) -> list[str]:
    """One chunk per section of the registry that holds a table or figure: its tables, then its
    figures (with the numbers their captions add, given the report's ``ctx`` and ``frames``)."""
    out, appendix = [], False

    def numbers(spec: FigureSpec) -> str:
        return spec.caption_numbers(ctx, frames) if spec.caption_numbers and ctx is not None else ""

    for section in SECTIONS:
        tables = [t for t in registry.tables().values() if t.section == section.key]
        figures = [f for f in registry.figures().values() if f.section == section.key]
        # a section of landscape tables alone is turned whole, so that its heading stays with them
        turned = bool(tables) and not figures and all(t.landscape for t in tables)
        items = [table(t, not turned) for t in tables] + [figure(f, numbers(f)) for f in figures]
        if not items:
            continue
        start = "\\clearpage\n\\appendix\n" if section.appendix and not appendix else ""
        appendix = appendix or section.appendix
        chunk = f"\\section{{{section.title}}}\n" + "".join(items)
        out.append(start + (f"\\begin{{landscape}}\n{chunk}\\end{{landscape}}\n" if turned else chunk))
    return out


def paper_tex(ctx: Context, frames: Frames) -> str:
    body = [
        f"% written by `dla-repro report paper {ctx.command_options}`; do not edit\n" + PREAMBLE,
        "\\title{Reproducing ``Strengthening Layer Interaction via Dynamic Layer Attention''\\\\"
        f"\\large {ctx.source_words}}}\n\\author{{dla-repro}}\n\\date{{}}\n",
        "\\begin{document}\n\\maketitle\n",
        status_text(ctx, frames) + "\n",
        *sections(ctx, frames),
        "\\end{document}\n",
    ]
    return "\n".join(body)


def write_paper(ctx: Context, echo: Callable[[str], None] = print, frames: Frames | None = None) -> Path:
    """Write ``reports/<profile>/paper.tex`` (if its content changed); warn about missing inputs.
    ``frames``: the aggregate in memory (``report all``); read from ``results/<profile>/`` otherwise."""
    frames = frames if frames is not None else read_outputs(ctx)
    path = ctx.reports_dir / "paper.tex"
    changed = write_if_changed(path, paper_tex(ctx, frames))
    missing = [f"tables/{f}" for f in registry.table_files() if not (ctx.reports_dir / "tables" / f).is_file()]
    missing += [f"figures/{f}" for f in registry.figure_files() if f.endswith(".pdf")
                and not (ctx.reports_dir / "figures" / f).is_file()]
    echo(f"paper: {path} {'written' if changed else 'unchanged'}")
    if missing:
        echo(f"  warning: {', '.join(missing)} missing: run `dla-repro report tables` and `report figures`")
    return path


def latex_errors(log: str, limit: int = 12) -> str:
    """The error lines of a LaTeX log ('! ...' and the context after each)."""
    lines = log.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith("!"):
            out.extend(lines[i:i + 4])
            if len(out) >= limit:
                break
    return "\n".join(out) if out else "\n".join(lines[-limit:])


def overfull_boxes(log: str) -> list[str]:
    """'Overfull \\hbox (12.3pt too wide) ...' warnings: content wider than the page."""
    return [line for line in log.splitlines() if line.startswith("Overfull \\hbox")]


def compile_paper(ctx: Context, echo: Callable[[str], None] = print) -> Path:
    """Compile ``paper.tex`` with pdflatex (two passes, more until references settle) into ``paper.pdf``."""
    tex = ctx.reports_dir / "paper.tex"
    if not tex.is_file():
        raise ReportError(f"{tex} not found: run `dla-repro report paper --profile {ctx.profile}` first")
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        raise ReportError(f"pdflatex not found: {INSTALL_HINT}")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "FORCE_SOURCE_DATE": "1"}
    with tempfile.TemporaryDirectory(prefix="tmp-latex-", dir=ctx.reports_dir) as tmp:
        build = str(Path(tmp).resolve())
        log = ""
        for attempt in range(MAX_PASSES):
            proc = subprocess.run([pdflatex, "-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error",
                                   f"-output-directory={build}", "paper.tex"],
                                  cwd=ctx.reports_dir, env=env, capture_output=True, text=True, errors="replace")
            log_path = Path(build) / "paper.log"
            log = log_path.read_text(errors="replace") if log_path.is_file() else proc.stdout
            if proc.returncode != 0:
                raise ReportError(f"pdflatex failed on {tex}:\n{latex_errors(log)}")
            if attempt >= 1 and not RERUN.search(log):  # at least two passes (references), more if asked
                break
        pdf = (Path(build) / "paper.pdf").read_bytes()
    out = ctx.reports_dir / "paper.pdf"
    changed = write_if_changed(out, pdf)
    for warning in overfull_boxes(log):
        echo(f"  latex warning: {warning}")
    echo(f"paper: {out} {'written' if changed else 'unchanged'}")
    return out
