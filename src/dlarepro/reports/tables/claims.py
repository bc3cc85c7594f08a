"""The paper's claims: a verdict on every quantitative statement of its prose (``claims.csv``,
written by ``report claims``), then every claim whose published check fails, with the arithmetic.

The verdict table runs over pages (a longtable with a row per claim, grouped by the paper's
sections); the decision rules in its caption are :data:`dlarepro.claims.VERDICT_RULES`, the one
statement of the rules the README also carries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ... import claims as engine
from ..common import SYNTHETIC_NOTE
from ..latex import NA, tex_escape, tex_text
from ..registry import TableSpec
from ..tablekit import Builder
from ..verdicts import claims_of

#: the columns of the verdict table: (header, LaTeX column type)
COLUMNS = (("Claim", r">{\raggedright\arraybackslash}p{6.1cm}"), ("Stated", "r"), ("Tables", "r"), ("Holds", "c"),
           (r"Ours: measured [95\,\% CI]", r">{\raggedright\arraybackslash}p{3.3cm}"), (r"$p_{\mathrm{Holm}}$", "r"),
           ("Verdict", "l"))
SYNTHETIC_MARK = r"$^{\dagger}$"


def number(value: Any, fixed: bool = False) -> str:
    """A claim's number ('--' when there is none): as few digits as it has, up to four significant
    ones (a value the sentence or the tables print), or three always shown (``fixed``: ours)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return NA
    value = float(value)
    if math.isinf(value):
        return r"$\infty$"
    if value and abs(value) < 1e-3:
        return f"{value:.1e}"
    if not fixed:
        return f"{value:.4g}"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:#.3g}"


def _holds(value: Any) -> str:
    if value is None or value is pd.NA:
        return NA
    return "yes" if bool(value) else r"\textbf{no}"


def _measured(r) -> str:
    if r.verdict == "not run":
        return NA
    if math.isnan(r.ci_low) or (r.ci_low == r.ci_high == r.measured):
        return number(r.measured, fixed=True)  # exact counts (parameters, MACs), or one seed: no interval
    if any(math.isinf(v) for v in (r.measured, r.ci_low, r.ci_high)):
        return f"{number(r.measured, True)} [{number(r.ci_low, True)}, {number(r.ci_high, True)}]"
    # one number of decimals for the estimate and its bounds: three significant digits of the widest
    scale = max(abs(r.measured), abs(r.ci_low), abs(r.ci_high)) or 1.0
    decimals = max(0, 2 - math.floor(math.log10(scale)))
    return f"{r.measured:.{decimals}f} [{r.ci_low:.{decimals}f}, {r.ci_high:.{decimals}f}]"


def _verdict(r) -> str:
    text = r"\textbf{not reproduced}" if r.verdict == "not reproduced" else tex_escape(r.verdict)
    return text + (SYNTHETIC_MARK if r.synthetic else "")


def _claim(r) -> str:
    return (rf"\textsf{{{tex_escape(r.id)}}} \hfill {{\scriptsize {tex_text(r.unit)}}}\newline "
            rf"\textit{{``{tex_text(r.quote.strip())}''}}")


@dataclass
class ClaimsTable:
    """The verdict table and the failing published checks, as one LaTeX file (same interface as
    :class:`dlarepro.reports.latex.Table`: ``name`` and ``latex(command_options)``)."""

    name: str
    verdicts: pd.DataFrame
    caption: str
    after: str

    def latex(self, command_options: str) -> str:
        header = " & ".join(h for h, _ in COLUMNS) + r" \\"
        spec = "@{}" + "".join(t for _, t in COLUMNS) + "@{}"
        lines = [f"% {self.name}: written by `dla-repro report tables {command_options}`; do not edit",
                 r"% needs \usepackage{booktabs,longtable,array}",
                 r"{\footnotesize", r"\setlength{\tabcolsep}{3pt}", rf"\begin{{longtable}}{{{spec}}}",
                 rf"\caption{{{self.caption}}}\label{{tab:{self.name}}}\\", r"\toprule", header, r"\midrule",
                 r"\endfirsthead", r"\caption[]{The paper's claims (continued).}\\", r"\toprule", header,
                 r"\midrule", r"\endhead", r"\bottomrule", r"\endlastfoot"]
        section = None
        for r in self.verdicts.itertuples(index=False):
            if r.section != section:
                if section is not None:
                    lines.append(r"\midrule")
                lines.append(rf"\multicolumn{{{len(COLUMNS)}}}{{@{{}}l}}{{\textit{{{tex_text(r.section)}}}}}\\*")
                section = r.section
            cells = [_claim(r), number(r.stated), number(r.recomputed), _holds(r.published_holds), _measured(r),
                     number(r.p_holm, fixed=True), _verdict(r)]
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\end{longtable}", "}"]
        return "\n".join(lines) + "\n" + self.after


def failures_tex(failures: list[engine.Failure], total: int) -> str:
    """Every claim the paper's own tables contradict, with the arithmetic of its failing comparisons."""
    if not failures:
        return f"\\paragraph{{The paper's own tables.}} All {total} claims agree with the paper's tables.\n"
    items = []
    for f in failures:
        failing = [line for line in f.arithmetic if line.rstrip().endswith("FAILS")]
        holding = len(f.arithmetic) - len(failing)
        more = (f"\n  \\item[] \\textit{{{holding} other comparison{'s' if holding != 1 else ''} of the sentence "
                f"hold{'' if holding != 1 else 's'}.}}" if holding else "")
        body = "".join(f"\n  \\item {tex_text(line)}" for line in failing)
        items.append(f"\\item \\textsf{{{tex_escape(f.id)}}} ({tex_text(f.section)}): "
                     f"\\textit{{``{tex_text(f.quote.strip())}''}}\n  \\begin{{itemize}}{body}{more}\n  "
                     "\\end{itemize}")
    return ("\\paragraph{Claims the paper's own tables contradict.} "
            f"{len(failures)} of the {total} claims fail the published check (the column Holds above): each "
            "below with the arithmetic of the comparisons that fail, on the numbers as printed.\n"
            "\\begin{itemize}\\small\n" + "\n".join(items) + "\n\\end{itemize}\n")


def build(b: Builder) -> ClaimsTable:
    df = claims_of(b.ctx, b.frames)
    data = engine.section_data(df)
    counts = data["counts"]
    tally = ", ".join(f"{counts[v]} {v}" for v in engine.VERDICTS)
    synthetic = counts["synthetic"] > 0
    caption = (f"The paper's claims: a verdict on each of its {counts['claims']} quantitative statements "
               f"(claims.csv; {b.ctx.source_words}): {tally}. "
               + (r"\textbf{" + SYNTHETIC_NOTE.capitalize() + f"}}: {SYNTHETIC_MARK} marks the {counts['synthetic']} "
                  "verdicts that rest on runs trained on synthetic data. " if synthetic else "")
               + "Stated: the number the sentence states; Tables: the same quantity recomputed from the paper's "
               "own tables; Holds: does the sentence agree with them, to the printed precision (the unit is on "
               "the right of each claim's name). Ours: the claim's contrast on our seeds (best-epoch top-1, the "
               "official code's metric, for accuracy claims) and its 95\\,\\% Welch interval; $p_{\\mathrm{Holm}}$: "
               "its p-value, Holm-corrected within the claims of one table. Verdicts: "
               + tex_text(engine.VERDICT_RULES))
    return ClaimsTable(TABLE.name, df, caption, failures_tex(data["failures"], counts["claims"]))


TABLE = TableSpec("claims", 8, "claims", build, inputs=("claims.csv",))
