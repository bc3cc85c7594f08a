"""LaTeX versions of the paper's Tables 1-6 with our numbers beside the published ones, and the
parameter check (``params.tex``): ``reports/<profile>/tables/*.tex``.

Every table keeps the paper's rows, order and blocks. Cells are plain strings (escaped here) in a
pandas DataFrame rendered by ``Styler.to_latex`` (booktabs rules; bold through a Styler style);
only the ``table`` wrapper around the tabular is written by hand. A row without finished runs shows
the published value and *not run*; a method we do not build shows *n/b*; nothing is left empty.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from .. import paper
from .aggregate import read_outputs
from .common import (DATASET_NAMES, NA, SYNTHETIC_NOTE, Context, fmt, is_number,
                     tex_escape, write_if_changed)
from .rows import paper_rows

TABLE_FILES = ("table1.tex", "table2.tex", "table3.tex", "table4.tex", "table5.tex", "table6.tex", "params.tex")
PM = r" $\pm$ "
NOT_RUN_TEX = r"\textit{not run}"
NOT_BUILT_TEX = r"\textit{n/b}"
BOLD = "textbf:--rwrap;"


# ---------------------------------------------------------------------------------------------
# model counts (building ImageNet models takes seconds: each is built once per process)


class ModelCounts:
    """Exact parameter and MAC counts from ``dlarepro.modelinfo``, cached per process.

    Tests substitute a subclass with canned ImageNet numbers; the CIFAR counts are cheap."""

    @functools.lru_cache(maxsize=None)
    def params(self, arch: str, depth: int, dataset: str, knobs: tuple = ()) -> int:
        from ..modelinfo import model_info

        return model_info(arch, depth, dataset, macs=False, **dict(knobs)).params

    @functools.lru_cache(maxsize=None)
    def imagenet(self, arch: str, depth: int) -> tuple[int, int]:
        """(parameters, MACs at 224x224): the model is built on the meta device (shapes only, no
        weight initialisation), counted as ``modelinfo.model_info`` counts (tests check equality)."""
        from ..modelinfo import meta_counts

        return meta_counts(arch, depth, "imagenet")

    @functools.lru_cache(maxsize=None)
    def check(self) -> pd.DataFrame:
        from ..modelinfo import parameter_check

        return parameter_check()


DEFAULT_COUNTS = ModelCounts()


# ---------------------------------------------------------------------------------------------
# rendering


@dataclass
class Table:
    """One table: display strings, which cells are bold, and the words around it."""

    name: str
    cells: pd.DataFrame                 # index: (block, label) or label; columns: (super, sub)
    bold: pd.DataFrame                  # same shape, True = bold
    caption: str                        # LaTeX source
    column_format: str
    fit_width: bool = False             # shrink to the text width when wider
    notes: list[str] = field(default_factory=list)

    def tabular(self) -> str:
        mask = self.bold.to_numpy()
        styler = self.cells.style.apply(lambda d: np.where(mask, BOLD, ""), axis=None)
        multi = isinstance(self.cells.index, pd.MultiIndex)
        latex = styler.to_latex(column_format=self.column_format, hrules=True, multicol_align="c",
                                multirow_align="c", clines="skip-last;data" if multi else None,
                                siunitx=False)
        return header_rules(booktabs_blocks(latex), self.cells.index.nlevels)

    def latex(self, profile: str) -> str:
        body = self.tabular().rstrip("\n")
        if self.fit_width:
            body = ("\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n" + body + "%\n}")
        notes = "".join(f"\\par\\smallskip\\parbox{{\\linewidth}}{{\\footnotesize {n}}}\n" for n in self.notes)
        return (f"% {self.name}: written by `dla-repro report tables --profile {profile}`; do not edit\n"
                "% needs \\usepackage{booktabs,multirow,graphicx,float}\n"
                "\\begin{table}[H]\n\\centering\n\\small\n"
                f"\\caption{{{self.caption}}}\n\\label{{tab:{self.name}}}\n"
                f"{body}\n{notes}\\end{{table}}\n")


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


_MULTICOL = re.compile(r"\\multicolumn\{([0-9]+)\}\{[^}]*\}\{(.*)\}$")


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


def mean_std(mean: Any, std: Any, digits: int = 2) -> str:
    if not is_number(mean):
        return ""
    return fmt(mean, digits) + (PM + fmt(std, digits) if is_number(std) else "")


def p_text(p: Any) -> str:
    if not is_number(p):
        return NA
    return "$<$0.001" if p < 0.001 else f"{p:.3f}"


# ---------------------------------------------------------------------------------------------
# our numbers for one paper row


@dataclass
class Stats:
    """Our seed statistics of one config (``n == 0``: not run)."""

    n: int = 0
    best_mean: float = math.nan
    best_std: float = math.nan
    final_mean: float = math.nan
    top5_mean: float = math.nan
    params: float = math.nan
    p: float = math.nan
    n_synthetic: int = 0

    @classmethod
    def of(cls, summary: pd.DataFrame, config_id: str) -> "Stats":
        hit = summary[summary.config_id == config_id]
        if hit.empty or int(hit.iloc[0].n_seeds) == 0:
            return cls()
        s = hit.iloc[0]
        return cls(int(s.n_seeds), float(s.best_top1_mean), float(s.best_top1_std), float(s.final_top1_mean),
                   float(s.final_top5_mean), float(s.params), float(s.p_welch), int(s.n_synthetic))


class Builder:
    """Shared state of the CIFAR tables: the summary, the seed count, the caption words."""

    def __init__(self, ctx: Context, summary: pd.DataFrame, counts: ModelCounts):
        self.ctx, self.summary, self.counts = ctx, summary, counts
        self.rows = paper_rows(ctx)

    def stats(self, config_id: str) -> Stats:
        return Stats.of(self.summary, config_id)

    def params_m(self, r, stats: Stats) -> str:
        """Our parameters (million) of the trained model: from the runs, else counted."""
        if stats.n:
            return fmt(stats.params / 1e6)
        from ..methods import METHODS as SPECS

        knobs = SPECS[r.arch].id_knobs(r.dataset, {k: v for k, v in (("cell", r.cell), ("sigma", r.sigma)) if v})
        return fmt(self.counts.params(r.arch, self.ctx.trained_depth(r.paper_depth), r.dataset, knobs) / 1e6)

    @staticmethod
    def top1(stats: Stats, modal_n: int, star: bool = False) -> str:
        if not stats.n:
            return NOT_RUN_TEX
        text = mean_std(stats.best_mean, stats.best_std)
        if star and is_number(stats.p) and stats.p < 0.05:
            text += "$^{*}$"
        if stats.n != modal_n:
            text += f" {{\\scriptsize(n={stats.n})}}"
        return text

    @staticmethod
    def final(stats: Stats) -> str:
        return fmt(stats.final_mean) if stats.n else NOT_RUN_TEX

    def caption(self, title: str, stats: list[Stats], paper_depths, extra: str = "") -> str:
        ran = [s for s in stats if s.n]
        parts = [title]
        synthetic = any(s.n_synthetic for s in ran) or self.ctx.synthetic_profile
        if synthetic:
            depth = self.ctx.depth_note(paper_depths)
            parts.append(r"\textbf{" + SYNTHETIC_NOTE.capitalize() + "}" + (f" ({depth})" if depth else "") + ".")
        profile = f"profile \\texttt{{{tex_escape(self.ctx.profile)}}}"
        if ran:
            parts.append(f"Ours ({profile}): Top-1 is the best test top-1 over epochs, the paper's metric (it picks "
                         f"the maximum on the test set: an upward bias), mean $\\pm$ sample std over "
                         f"{seed_words(ran)}; Final: final-epoch top-1, mean.")
        else:
            parts.append(f"No finished runs in {profile} yet: every row shows the published value and "
                         "\\textit{not run}.")
        if extra:
            parts.append(extra)
        parts.append("Paper: as published. Bold: best per column within a block.")
        return " ".join(parts)


def modal(ns: list[int]) -> int:
    ns = [n for n in ns if n]
    return max(set(ns), key=lambda n: (ns.count(n), n)) if ns else 0


def seed_words(ran: list[Stats]) -> str:
    n = modal([s.n for s in ran])
    others = sorted({s.n for s in ran} - {n})
    text = f"{n} seed{'s' if n != 1 else ''}"
    if others:
        text += f" (``(n={others[0]})'' marks a row with another number of finished seeds)"
    return text


def frame(records: list[tuple[tuple, dict]], columns: list[tuple], corner: str | None) -> pd.DataFrame:
    keys = [k for k, _ in records]
    index = pd.MultiIndex.from_tuples(keys) if len(keys[0]) > 1 else pd.Index([k[0] for k in keys])
    cols = pd.MultiIndex.from_tuples(columns, names=[None] * (len(columns[0]) - 1) + [corner])
    return pd.DataFrame([[cells[c] for c in columns] for _, cells in records], index=index, columns=cols)


def numeric_frame(records: list[tuple[tuple, dict]], like: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([[vals.get(c, np.nan) for c in like.columns] for _, vals in records],
                        index=like.index, columns=like.columns, dtype=float)


# ---------------------------------------------------------------------------------------------
# the tables


def table1(b: Builder) -> Table:
    rows = b.rows[b.rows.table == 1]
    datasets = ["cifar10", "cifar100"]
    params, top1, final = tex_escape("#P(M)"), "Top-1", "Final"
    cols = [(DATASET_NAMES[d], who, c) for d in datasets
            for who, c in (("Ours", params), ("Ours", top1), ("Ours", final), ("Paper", top1))]
    all_stats, records, numbers = [], [], []
    for row_no in sorted(rows.row.unique()):
        block = rows[rows.row == row_no]
        first = block.iloc[0]
        cells, nums = {}, {}
        for d in datasets:
            r = block[block.dataset == d].iloc[0]
            s = b.stats(r.config_id)
            all_stats.append(s)
            name = DATASET_NAMES[d]
            cells[(name, "Ours", params)] = b.params_m(r, s)
            cells[(name, "Ours", top1)] = s
            cells[(name, "Ours", final)] = b.final(s)
            cells[(name, "Paper", top1)] = mean_std(r.published_mean, r.published_std)
            nums[(name, "Ours", top1)] = s.best_mean
            nums[(name, "Ours", final)] = s.final_mean
            nums[(name, "Paper", top1)] = r.published_mean
        records.append(((str(first.paper_depth), tex_escape(first.label)), cells))
        numbers.append(((), nums))
    n = modal([s.n for s in all_stats])
    for _, cells in records:
        for d in datasets:
            key = (DATASET_NAMES[d], "Ours", top1)
            cells[key] = b.top1(cells[key], n, star=True)
    cells = frame(records, cols, "Model")
    values = numeric_frame(numbers, cells)
    mask = best_mask(values, pd.Series(cells.index.get_level_values(0)), [c for c in cols if c[2] != params])
    caption = b.caption(
        r"Testing accuracy (\%) on CIFAR-10 and CIFAR-100 (paper's Table~1); rows grouped by depth.",
        all_stats, rows.paper_depth,
        extra=r"\#P(M): parameters of the model trained (million). $^{*}$: $p<0.05$, Welch $t$-test of the best "
              r"top-1 against the ResNet of the same depth (every $p$ is in summary.csv).")
    return Table("table1", cells, mask, caption, "ll" + "rrrr" * 2, fit_width=True)


def _single(b: Builder, number: int, block_of, columns: list[str], title: str) -> Table:
    rows = b.rows[b.rows.table == number]
    stats = [b.stats(c) for c in rows.config_id]
    n = modal([s.n for s in stats])
    cols = [("Ours", c) if c in ("#P(M)", "Top-1", "Final", "p") else ("Paper", c.replace("Paper ", ""))
            for c in columns]
    cols = [(a, "$p$" if c == "p" else tex_escape(c)) for a, c in cols]
    records, numbers = [], []
    for r, s in zip(rows.itertuples(index=False), stats):
        cells, nums = {}, {}
        for (sup, sub), name in zip(cols, columns):
            if name == "#P(M)":
                cells[(sup, sub)] = b.params_m(r, s)
            elif name == "Top-1":
                cells[(sup, sub)] = b.top1(s, n)
                nums[(sup, sub)] = s.best_mean
            elif name == "Final":
                cells[(sup, sub)] = b.final(s)
                nums[(sup, sub)] = s.final_mean
            elif name == "p":
                cells[(sup, sub)] = p_text(s.p) if s.n else NA
            elif name == "Paper #P(M)":
                cells[(sup, sub)] = fmt(r.published_params_m)
            elif name == "Paper Top-1":
                cells[(sup, sub)] = mean_std(r.published_mean, r.published_std)
                nums[(sup, sub)] = r.published_mean
        key = (tex_escape(block_of(r)), tex_escape(r.label)) if block_of else (tex_escape(r.label),)
        records.append((key, cells))
        numbers.append(((), nums))
    label_header = {4: "Block", 5: "Function", 6: "Block"}[number]
    cells = frame(records, cols, label_header)
    values = numeric_frame(numbers, cells)
    blocks = pd.Series(cells.index.get_level_values(0)) if block_of else None
    mask = best_mask(values, blocks, [c for c in cols if c[1] in ("Top-1", "Final")])
    baseline = "ResNet-110 (CIFAR-100)" if number == 4 else "the ResNet of the same depth"
    caption = b.caption(title, stats, rows.paper_depth,
                        extra=f"$p$: Welch $t$-test of the best top-1 against {baseline} ({NA}: fewer than two "
                              "seeds on a side).")
    fmt_cols = ("ll" if block_of else "l") + "r" * len(cols)
    return Table(f"table{number}", cells, mask, caption, fmt_cols)


def table4(b: Builder) -> Table:
    return _single(b, 4, None, ["#P(M)", "Top-1", "Final", "p", "Paper #P(M)", "Paper Top-1"],
                   r"Testing accuracy (\%) of different RNN blocks in DLA-L-110 on CIFAR-100 (paper's Table~4).")


def table5(b: Builder) -> Table:
    return _single(b, 5, lambda r: r.group, ["Top-1", "Final", "p", "Paper Top-1"],
                   r"Testing accuracy (\%) of the activation $\sigma$ normalising $c^{m-1}$ in DLA-L on CIFAR-100 "
                   r"(paper's Table~5).")


def table6(b: Builder) -> Table:
    return _single(b, 6, lambda r: str(r.paper_depth), ["#P(M)", "Top-1", "Final", "p", "Paper #P(M)",
                                                         "Paper Top-1"],
                   r"Testing accuracy (\%) of different RNN blocks in layer-wise information integration (LII) on "
                   r"CIFAR-100 (paper's Table~6).")


def table2(b: Builder) -> Table:
    """ImageNet: our exact #P/MACs where we build the model, the paper's numbers quoted, not run."""
    t = paper.load_table(2)
    cols = [("Ours", "#P(M)"), ("Ours", "MACs(G)"), ("Ours", "Top-1"), ("Ours", "Top-5"),
            ("Paper (quoted)", "#P(M)"), ("Paper (quoted)", "FLOPs(G)"), ("Paper (quoted)", "Top-1"),
            ("Paper (quoted)", "Top-5")]
    cols = [(a, tex_escape(c)) for a, c in cols]
    records, numbers, stats = [], [], []
    for r in t.itertuples(index=False):
        cells, nums = {}, {}
        if r.arch:
            params, macs = b.counts.imagenet(r.arch, int(r.depth))
            cells[cols[0]], cells[cols[1]] = fmt(params / 1e6, 1), fmt(macs / 1e9, 2)
            s = b.stats(b.ctx.config_id("imagenet", r.arch, int(r.depth)))
        else:
            cells[cols[0]] = cells[cols[1]] = NOT_BUILT_TEX
            s = Stats()
        stats.append(s)
        cells[cols[2]] = mean_std(s.best_mean, s.best_std, 1) if s.n else NOT_RUN_TEX
        cells[cols[3]] = fmt(s.top5_mean, 1) if s.n else NOT_RUN_TEX
        nums[cols[2]] = s.best_mean
        for col, value, digits in ((cols[4], r.params_m, 1), (cols[5], r.flops_g, 1), (cols[6], r.top1, 1),
                                   (cols[7], r.top5, 1)):
            cells[col] = fmt(value, digits) or NA
        nums[cols[6]], nums[cols[7]] = r.top1, r.top5
        records.append(((str(r.depth), tex_escape(r.label)), cells))
        numbers.append(((), nums))
    cells = frame(records, cols, "Model")
    mask = best_mask(numeric_frame(numbers, cells), pd.Series(cells.index.get_level_values(0)),
                     [cols[2], cols[6], cols[7]], digits=1)
    ran = [s for s in stats if s.n]
    caption = (r"Accuracy (\%) on the ImageNet-1K validation set (paper's Table~2). \textbf{Paper (quoted)}: the "
               r"paper's numbers, which it in turn quotes from each method's original paper; FLOPs are "
               r"multiply-accumulates. \textbf{Ours}: exact parameters and multiply-accumulates of our "
               r"implementation at 224$\times$224 (torch's FLOP counter: convolutions and matrix products); "
               + (f"top-1/top-5 of {seed_words(ran)}. " if ran else
                  r"no ImageNet runs exist yet (\textit{not run}). ")
               + (r"\textbf{" + SYNTHETIC_NOTE.capitalize() + "}. " if any(s.n_synthetic for s in ran) else "")
               + rf"\textit{{n/b}}: a method we do not implement; {NA}: not given by the paper. "
               r"Bold: best of each column within a block.")
    return Table("table2", cells, mask, caption, "ll" + "r" * len(cols), fit_width=True)


def _detection_stats(b: Builder, r) -> tuple[int, int, dict[str, float]]:
    """(finished seeds, synthetic seeds, means of params and each detection metric) of a Table 3 row."""
    if not r.arch:
        return 0, 0, {}
    cid = b.ctx.config_id("coco", r.arch, int(r.depth), detector=r.detector)
    hit = b.summary[b.summary.config_id == cid]
    if hit.empty or int(hit.iloc[0].n_seeds) == 0:
        return 0, 0, {}
    row = hit.iloc[0]
    means = {k[: -len("_mean")]: float(row[k]) for k in row.index if k.startswith(("bbox_", "segm_"))}
    return int(row.n_seeds), int(row.n_synthetic), {**means, "params": float(row.params)}


def table3(b: Builder) -> Table:
    """COCO detection: our box (and mask) AP where runs exist, the paper's numbers quoted."""
    t = paper.load_table(3)
    metrics = [("ap", "AP"), ("ap50", "AP$_{50}$"), ("ap75", "AP$_{75}$"), ("aps", "AP$_{S}$"),
               ("apm", "AP$_{M}$"), ("apl", "AP$_{L}$")]
    ours = [("bbox_ap", "AP$^{b}$"), ("bbox_ap50", "AP$^{b}_{50}$"), ("bbox_ap75", "AP$^{b}_{75}$"),
            ("segm_ap", "AP$^{m}$")]
    cols = ([("Ours", r"\#P(M)")] + [("Ours", m) for _, m in ours] + [("Paper (quoted)", r"\#P(M)")]
            + [("Paper (quoted)", m) for _, m in metrics])
    detector = {"faster_rcnn": "Faster R-CNN", "mask_rcnn": "Mask R-CNN"}
    records, numbers, ran = [], [], []
    for r in t.itertuples(index=False):
        n, n_synthetic, means = _detection_stats(b, r)
        if n:
            ran.append(Stats(n=n, n_synthetic=n_synthetic))
        cells: dict = {}
        nums: dict = {}
        cells[cols[0]] = fmt(means["params"] / 1e6, 1) if n else (NOT_RUN_TEX if r.arch else NOT_BUILT_TEX)
        for (key, _), col in zip(ours, cols[1:5]):
            if key.startswith("segm") and r.detector != "mask_rcnn":
                cells[col] = NA
            elif n:
                cells[col] = fmt(means.get(key), 1) or NA
                nums[col] = means.get(key, math.nan)
            else:
                cells[col] = NOT_RUN_TEX if r.arch else NOT_BUILT_TEX
        cells[cols[5]] = fmt(r.params_m, 1)
        for (key, _), col in zip(metrics, cols[6:]):
            cells[col] = fmt(getattr(r, key), 1) or NA
            nums[col] = getattr(r, key)
        records.append(((detector[r.detector], str(r.depth), tex_escape(r.label)), cells))
        numbers.append(((), nums))
    cells = frame(records, cols, "Model")
    blocks = pd.Series([f"{a}/{d}" for a, d in zip(cells.index.get_level_values(0), cells.index.get_level_values(1))])
    mask = best_mask(numeric_frame(numbers, cells), blocks, cols[1:5] + cols[6:], digits=1)
    synthetic = any(s.n_synthetic for s in ran)
    ours_text = (rf"\textbf{{Ours}}: box AP, AP$_{{50}}$, AP$_{{75}}$ and mask AP (pycocotools) of "
                 rf"{seed_words(ran)}, each backbone initialised from our ImageNet run of the same model"
                 + ". " if ran else r"\textbf{Ours}: no detection runs exist yet (\textit{not run}). ")
    caption = (r"Object detection on COCO val2017 with Faster R-CNN and Mask R-CNN (paper's Table~3). "
               + ours_text + (r"\textbf{" + SYNTHETIC_NOTE.capitalize() + "}. " if synthetic else "")
               + r"\textbf{Paper (quoted)}: as published. "
               r"The paper heads every column AP, AP$_{50}$, AP$_{75}$, AP$_{S}$, AP$_{M}$, AP$_{L}$, but for "
               r"Mask R-CNN the last three are most likely the mask AP, AP$_{50}$ and AP$_{75}$ (as in MRLA), "
               rf"not box AP$_{{S/M/L}}$. \textit{{n/b}}: a method we do not implement; {NA}: not applicable or "
               r"not given. Bold: best of each column within a block.")
    return Table("table3", cells, mask, caption, "lll" + "r" * len(cols), fit_width=True)


def params_table(b: Builder) -> Table:
    """Every paper model's exact parameter count against the printed #P, differences explained."""
    check = b.counts.check()
    notes: dict[str, str] = {}
    records = []
    for i, r in enumerate(check.itertuples(index=False)):
        status = r.status
        if r.note:
            letter = notes.setdefault(r.note, chr(ord("a") + len(notes)))
            status = f"{status} ({letter})"
        if r.status == "MISMATCH":
            status = r"\textbf{MISMATCH}" + (f" ({letter})" if r.note else "")
        digits = 1 if r.dataset == "imagenet" else 2
        cells = {("", "Table"): str(r.table), ("", "Dataset"): DATASET_NAMES.get(r.dataset, tex_escape(r.dataset)),
                 ("", "Model"): tex_escape(r.model),
                 ("Ours", "exact"): f"{int(r.params):,}".replace(",", "{,}"),
                 ("Ours", "(M)"): fmt(r.ours_m, digits), ("Paper", "#P(M)"): fmt(r.paper_m, digits),
                 ("", "Status"): status}
        records.append(((str(i),), cells))
    cols = [("", "Table"), ("", "Dataset"), ("", "Model"), ("Ours", "exact"), ("Ours", "(M)"), ("Paper", "#P(M)"),
            ("", "Status")]
    cells = frame(records, cols, None)
    cells.columns = pd.MultiIndex.from_tuples([(a, tex_escape(c)) for a, c in cols])
    mask = pd.DataFrame(False, index=cells.index, columns=cells.columns)
    counts = check.status.value_counts()
    caption = (f"Parameter check: our exact count of every model the paper lists (Tables 1, 2, 4 and 6, at the "
               f"paper's depths) against its printed \\#P, rounded as the paper rounds. "
               f"{counts.get('ok', 0)} match, {counts.get('known', 0)} differ for an explained reason "
               f"(notes after the table), {counts.get('MISMATCH', 0)} unexplained mismatches.")
    table = Table("params", cells, mask, caption, "clllrrrl")
    table.notes = [f"({letter}) {tex_escape(note)}" for note, letter in notes.items()]
    return table


def params_latex(table: Table, profile: str) -> str:
    """The parameter check runs over a page: a longtable, its notes after it."""
    styler = table.cells.style.hide(axis=0)
    latex = styler.to_latex(environment="longtable", column_format=table.column_format[1:], hrules=True,
                            multicol_align="c", caption=table.caption, label="tab:params")
    # the caption repeated on every continued page: a short one there
    latex = latex.replace(f"\\caption[]{{{table.caption}}}", "\\caption[]{Parameter check (continued).}")
    notes = "".join(f"\\noindent{{\\footnotesize {n}}}\\par\n" for n in table.notes)
    return (f"% params: written by `dla-repro report tables --profile {profile}`; do not edit\n"
            "{\\small\n" + latex + "}\n" + notes)


# ---------------------------------------------------------------------------------------------


BUILDERS: Mapping[str, Callable[[Builder], Table]] = {
    "table1": table1, "table2": table2, "table3": table3, "table4": table4, "table5": table5, "table6": table6,
}


def build_tables(ctx: Context, summary: pd.DataFrame, counts: ModelCounts | None = None) -> dict[str, Table]:
    b = Builder(ctx, summary, counts or DEFAULT_COUNTS)
    tables = {name: make(b) for name, make in BUILDERS.items()}
    tables["params"] = params_table(b)
    return tables


def write_tables(ctx: Context, counts: ModelCounts | None = None, echo: Callable[[str], None] = print
                 ) -> list[Path]:
    """Write ``reports/<profile>/tables/*.tex`` (only files whose content changed); the written paths."""
    _, summary = read_outputs(ctx)
    out = ctx.reports_dir / "tables"
    written = []
    for name, table in build_tables(ctx, summary, counts).items():
        text = params_latex(table, ctx.profile) if name == "params" else table.latex(ctx.profile)
        if write_if_changed(out / f"{name}.tex", text):
            written.append(out / f"{name}.tex")
    echo(f"tables: {len(written)} of {len(TABLE_FILES)} written to {out} (the rest unchanged)")
    return written
