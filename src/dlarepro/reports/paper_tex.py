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

import pandas as pd

from .aggregate import read_outputs
from .common import BEST_NOTE, SYNTHETIC_NOTE, Context, ReportError, tex_escape, write_if_changed
from .figures import FIGURE_FILES
from .tables import TABLE_FILES

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
\usepackage{graphicx}
\usepackage{caption}
\usepackage{float}
\captionsetup{font=small,labelfont=bf}
\setlength{\LTcapwidth}{\textwidth}
"""

FIGURE_CAPTIONS = {
    "figure4": r"Top-1 accuracy versus depth on CIFAR-10 and CIFAR-100 for ResNet, DIANet, MRLA-L and DLA-L "
               r"(paper's Figure~4): mean (line) and $\pm$ one sample std (band) of the best top-1 over seeds; "
               r"dashed: the paper's Table~1 values (shown for real data only). A method or panel without "
               r"finished runs is marked \textit{not run}.",
    "figure2": r"Stage-3 attention scores of ResNet-56 on CIFAR-100 (paper's Figure~2): static layer attention "
               r"(MRLA-B) beside dynamic layer attention (DLA-B). Row $i$ holds the mean attention layer $i$ "
               r"pays to layers $1..i$ (mean over heads, test images and seeds).",
    "cost": r"Beyond the paper: measured median training-step time and parameter count of every method "
            r"versus the depth actually trained (CIFAR-100 runs; the machine is named in the panel title).",
}


def _counts(ctx: Context) -> tuple[int, int, pd.DataFrame]:
    runs, _ = read_outputs(ctx)
    path = ctx.results_dir / "problems.csv"
    problems = pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else pd.DataFrame(
        columns=["run_id", "status", "detail", "path"])
    return len(runs), len(ctx.runs()), problems


def status_text(ctx: Context) -> str:
    finished, expected, problems = _counts(ctx)
    runs, _ = read_outputs(ctx)
    synthetic = ctx.synthetic_profile or (len(runs) and runs["synthetic"].astype(str).str.lower().eq("true").any())
    description = ctx.settings.get("description", "")
    lines = [f"This report describes profile \\texttt{{{tex_escape(ctx.profile)}}}"
             + (f" ({tex_escape(description)})" if description else "")
             + f": {finished} of the {expected} runs its grid declares have finished; every table and figure "
               "below is computed from them, and a row or panel without finished runs says \\textit{not run}."]
    if synthetic:
        depth = ctx.depth_note(sorted(ctx.depth_map)) if ctx.depth_map else ""
        lines.append(r"\textbf{" + SYNTHETIC_NOTE.capitalize() + ".} The runs were trained on generated stand-in "
                     "data" + (f"; {depth}" if depth else "") + ", so the accuracies say nothing about the paper.")
    lines.append(BEST_NOTE + ".")
    if len(problems):
        lines.append(f"{len(problems)} run folder{'s are' if len(problems) != 1 else ' is'} unfinished, corrupt or "
                     "outside the grid and left out (\\texttt{results/" + tex_escape(ctx.profile)
                     + "/problems.csv}):")
        shown = problems.head(20)
        items = "".join(f"\\item \\texttt{{{tex_escape(p.run_id)}}}: {tex_escape(p.status)} --- "
                        f"{tex_escape(p.detail)}\n" for p in shown.itertuples(index=False))
        more = f"\\item \\ldots\\ and {len(problems) - len(shown)} more\n" if len(problems) > len(shown) else ""
        lines.append("\\begin{itemize}\\small\n" + items + more + "\\end{itemize}")
    return "\n\n".join(lines)


#: figures carry the paper's numbers (Figure 2, Figure 4); the cost figure comes after them
FIGURE_NUMBERS = {"figure2": 2, "figure4": 4, "cost": 5}


def figure(stem: str) -> str:
    return (f"\\setcounter{{figure}}{{{FIGURE_NUMBERS[stem] - 1}}}\n\\begin{{figure}}[H]\n\\centering\n"
            f"\\includegraphics[width=\\linewidth]{{figures/{stem}.pdf}}\n"
            f"\\caption{{{FIGURE_CAPTIONS[stem]}}}\n\\label{{fig:{stem}}}\n\\end{{figure}}\n")


def table(name: str) -> str:
    return f"\\input{{tables/{name}}}\n"


def paper_tex(ctx: Context) -> str:
    profile = tex_escape(ctx.profile)
    body = [
        f"% written by `dla-repro report paper --profile {ctx.profile}`; do not edit\n" + PREAMBLE,
        "\\title{Reproducing ``Strengthening Layer Interaction via Dynamic Layer Attention''\\\\"
        f"\\large profile \\texttt{{{profile}}}}}\n\\author{{dla-repro}}\n\\date{{}}\n",
        "\\begin{document}\n\\maketitle\n",
        status_text(ctx) + "\n",
        "\\section{CIFAR-10 and CIFAR-100}\n" + table("table1") + figure("figure4"),
        "\\section{ImageNet-1K}\n" + table("table2"),
        "\\section{COCO object detection}\n" + table("table3"),
        "\\section{Ablations}\n" + table("table4") + table("table5") + table("table6"),
        "\\section{Static versus dynamic attention}\n" + figure("figure2"),
        "\\section{Cost}\n" + figure("cost"),
        "\\clearpage\n\\appendix\n\\section{Parameter check}\n" + table("params"),
        "\\end{document}\n",
    ]
    return "\n".join(body)


def write_paper(ctx: Context, echo: Callable[[str], None] = print) -> Path:
    """Write ``reports/<profile>/paper.tex`` (if its content changed); warn about missing inputs."""
    path = ctx.reports_dir / "paper.tex"
    changed = write_if_changed(path, paper_tex(ctx))
    missing = [f"tables/{f}" for f in TABLE_FILES if not (ctx.reports_dir / "tables" / f).is_file()]
    missing += [f"figures/{f}" for f in FIGURE_FILES if f.endswith(".pdf")
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
