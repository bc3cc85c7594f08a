"""LaTeX rendering of the report tables: escaping and number cells, bold masks, and a
:class:`Table` (display strings + bold mask + caption) rendered by pandas' ``Styler.to_latex``
with booktabs rules between blocks. Table builders (``dlarepro.reports.tables``) make the cells;
nothing here knows what a table shows."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

NA = "--"                 # a statistic that cannot be computed (p-value with fewer than two seeds)
PM = r" $\pm$ "
NOT_RUN_TEX = r"\textit{not run}"
NOT_BUILT_TEX = r"\textit{n/b}"
BOLD = "textbf:--rwrap;"
FLOAT, LONGTABLE = "float", "longtable"

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_RE = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIAL))
#: characters of the claims' text (quotes, arithmetic, rules) that pdflatex's utf8 input does not know
_UNICODE = {"−": "$-$", "±": r"$\pm$", "≤": r"$\leq$", "≥": r"$\geq$", "²": r"\textsuperscript{2}",
            "Σ": r"$\Sigma$", "α": r"$\alpha$", "σ": r"$\sigma$", "–": "--", "’": "'", "…": r"\ldots{}",
            "×": r"$\times$", "≈": r"$\approx$", "·": r"$\cdot$", "“": "``", "”": "''",
            # ASCII, but text-mode < and > print as ¡ and ¿ in LaTeX's default font encoding
            "<": "$<$", ">": "$>$"}
_MULTICOL = re.compile(r"\\multicolumn\{([0-9]+)\}\{[^}]*\}\{(.*)\}$")


def tex_escape(text: Any) -> str:
    """Plain text -> LaTeX source that prints it (underscores, percent signs, ...)."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group()], str(text))


def tex_text(text: Any) -> str:
    """Plain text, Unicode maths included (−, ±, ≤, σ, …) and < >, -> LaTeX source that pdflatex prints."""
    escaped = tex_escape(text)
    return "".join(_UNICODE.get(ch, ch) for ch in escaped)


def fmt(value: Any, digits: int = 2) -> str:
    """A number with fixed decimals, or '' when it is missing (callers put a mark there)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return ""
    if value != value:  # NaN
        return ""
    return f"{value:.{digits}f}"


def is_number(value: Any) -> bool:
    try:
        return float(value) == float(value)
    except (TypeError, ValueError):
        return False


def mean_std(mean: Any, std: Any, digits: int = 2) -> str:
    if not is_number(mean):
        return ""
    return fmt(mean, digits) + (PM + fmt(std, digits) if is_number(std) else "")


def p_text(p: Any) -> str:
    if not is_number(p):
        return NA
    return "$<$0.001" if p < 0.001 else f"{p:.3f}"


@dataclass
class Table:
    """One table: display strings, which cells are bold, and the words around it.

    ``layout`` is ``float`` (a ``table`` float, shrunk to the text width when ``fit_width``) or
    ``longtable`` (runs over pages; the caption is shortened on continued pages)."""

    name: str
    cells: pd.DataFrame                 # index: (block, label) or label; columns: (super, sub)
    bold: pd.DataFrame                  # same shape, True = bold
    caption: str                        # LaTeX source
    column_format: str
    fit_width: bool = False
    notes: list[str] = field(default_factory=list)
    layout: str = FLOAT

    def tabular(self) -> str:
        mask = self.bold.to_numpy()
        styler = self.cells.style.apply(lambda d: np.where(mask, BOLD, ""), axis=None)
        multi = isinstance(self.cells.index, pd.MultiIndex)
        latex = styler.to_latex(column_format=self.column_format, hrules=True, multicol_align="c",
                                multirow_align="c", clines="skip-last;data" if multi else None,
                                siunitx=False)
        return header_rules(booktabs_blocks(latex), self.cells.index.nlevels)

    def latex(self, command_options: str) -> str:
        """The ``.tex`` file; its first line names the command that writes it."""
        head = f"% {self.name}: written by `dla-repro report tables {command_options}`; do not edit\n"
        return head + (self._longtable() if self.layout == LONGTABLE else self._float())

    def _float(self) -> str:
        body = self.tabular().rstrip("\n")
        if self.fit_width:
            body = ("\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n" + body + "%\n}")
        notes = "".join(f"\\par\\smallskip\\parbox{{\\linewidth}}{{\\footnotesize {n}}}\n" for n in self.notes)
        return ("% needs \\usepackage{booktabs,multirow,graphicx,float}\n"
                "\\begin{table}[H]\n\\centering\n\\small\n"
                f"\\caption{{{self.caption}}}\n\\label{{tab:{self.name}}}\n"
                f"{body}\n{notes}\\end{{table}}\n")

    def _longtable(self) -> str:
        styler = self.cells.style.hide(axis=0)
        latex = styler.to_latex(environment="longtable", column_format=self.column_format, hrules=True,
                                multicol_align="c", caption=self.caption, label=f"tab:{self.name}")
        # the caption repeated on every continued page: a short one there
        latex = latex.replace(f"\\caption[]{{{self.caption}}}", "\\caption[]{Parameter check (continued).}")
        notes = "".join(f"\\noindent{{\\footnotesize {n}}}\\par\n" for n in self.notes)
        return "{\\small\n" + latex + "}\n" + notes


def booktabs_blocks(latex: str) -> str:
    """Styler draws ``\\cline`` between index blocks: booktabs rules instead, none before the bottom.

    A line of clines becomes ``\\midrule`` when one spans every column (a top-level block ends),
    else ``\\cmidrule`` over the inner levels."""
    match = re.search(r"\\begin\{tabular\}\{([^}]*)\}", latex)
    ncols = len(re.findall(r"[lcrp]", match.group(1))) if match else None
    lines = latex.split("\n")
    out: list[str] = []
    for i, line in enumerate(lines):
        spans = re.findall(r"\\cline\{([0-9]+)-([0-9]+)\}", line)
        if not spans or re.sub(r"\\cline\{[0-9]+-[0-9]+\}|\s", "", line):
            out.append(line)
            continue
        if i + 1 < len(lines) and lines[i + 1].startswith("\\bottomrule"):
            continue
        spans = [(int(a), int(b)) for a, b in spans]
        if any(a == 1 and (ncols is None or b == ncols) for a, b in spans):
            out.append("\\midrule")
        else:
            out.append(" ".join(f"\\cmidrule(l){{{a}-{b}}}" for a, b in spans))
    return "\n".join(out)


def header_rules(latex: str, index_columns: int) -> str:
    """A ``\\cmidrule`` under every spanning header cell (CIFAR-10, Ours, ...), as booktabs intends."""
    lines = latex.split("\n")
    try:
        top = lines.index("\\toprule")
        mid = lines.index("\\midrule", top)
    except ValueError:
        return latex
    out = lines[: top + 1]
    header = lines[top + 1: mid]
    for n, line in enumerate(header):
        out.append(line)
        if n == len(header) - 1 or not line.endswith("\\\\"):
            continue
        column, rules = 1, []
        for cell in line[:-2].split(" & "):
            cell = cell.strip()
            m = _MULTICOL.match(cell)
            span, text = (int(m.group(1)), m.group(2)) if m else (1, cell)
            if text and column > index_columns:
                rules.append(f"\\cmidrule(lr){{{column}-{column + span - 1}}}")
            column += span
        if rules:
            out.append(" ".join(rules))
    return "\n".join(out + lines[mid:])


def best_mask(values: pd.DataFrame, blocks: pd.Series | None, columns: list, digits: int = 2) -> pd.DataFrame:
    """True where a value is the largest (at the printed precision) of its column within its block."""
    mask = pd.DataFrame(False, index=values.index, columns=values.columns)
    groups = [np.arange(len(values))] if blocks is None else [
        np.flatnonzero((blocks == b).to_numpy()) for b in pd.unique(blocks)]
    for col in columns:
        numeric = pd.to_numeric(values[col], errors="coerce").round(digits).to_numpy()
        for idx in groups:
            block = numeric[idx]
            if np.isfinite(block).sum() < 2:
                continue  # a lone number is not "best" of anything
            best = np.nanmax(block)
            mask.iloc[idx[block == best], mask.columns.get_loc(col)] = True
    return mask


def cell_frame(records: list[tuple[tuple, dict]], columns: list[tuple], corner: str | None) -> pd.DataFrame:
    """Display cells: one (index key, {column: text}) record per row; ``corner`` heads the index."""
    keys = [k for k, _ in records]
    index = pd.MultiIndex.from_tuples(keys) if len(keys[0]) > 1 else pd.Index([k[0] for k in keys])
    cols = pd.MultiIndex.from_tuples(columns, names=[None] * (len(columns[0]) - 1) + [corner])
    return pd.DataFrame([[cells[c] for c in columns] for _, cells in records], index=index, columns=cols)


def numeric_frame(records: list[tuple[tuple, dict]], like: pd.DataFrame) -> pd.DataFrame:
    """The numbers behind the cells of ``like`` (NaN where a cell shows none): what bold compares."""
    return pd.DataFrame([[vals.get(c, np.nan) for c in like.columns] for _, vals in records],
                        index=like.index, columns=like.columns, dtype=float)
