"""Table 2: ImageNet-1K. Our exact #P/MACs where we build the model and our runs' top-1/top-5 (both
from the best epoch, as the official code reports them), beside the paper's numbers (quoted, as
the paper quotes them from each method's paper)."""

from __future__ import annotations

import pandas as pd

from ... import paper
from ...methods import METHODS
from ..common import SYNTHETIC_NOTE
from ..comparisons import paper_pairs
from ..latex import (NA, NOT_BUILT_TEX, NOT_RUN_TEX, Table, best_mask, cell_frame, fmt, mean_std, numeric_frame,
                     tex_escape)
from ..registry import TableSpec
from ..tablekit import Builder, Stats, marks, run_notes, seed_words

COLUMNS = [("Ours", "#P(M)"), ("Ours", "MACs(G)"), ("Ours", "Top-1"), ("Ours", "Top-5"),
           ("Paper (quoted)", "#P(M)"), ("Paper (quoted)", "FLOPs(G)"), ("Paper (quoted)", "Top-1"),
           ("Paper (quoted)", "Top-5")]
#: the DSU reduction on ImageNet: the paper's text says 20, the official code (and our default) uses 16
PAPER_TEXT_REDUCTION, OFFICIAL_REDUCTION = 20, 16


def reduction_words(b: Builder, config_ids: list[str]) -> str:
    """Which DSU reduction the DLA runs of the table train (or would train: the planned or default value)."""
    configs = [b.ctx.index.configs[c] for c in config_ids if c in b.ctx.index.configs]
    dla = [c for c in configs if METHODS.get(c.arch) and "reduction" in METHODS[c.arch].knob_names
           and c.arch.startswith("dla")]
    values = sorted({int(c.knob("reduction")) for c in dla})
    if any(b.stats(c.config_id).n for c in dla):
        which = "trained"
    elif dla:
        which = "of the planned runs"
    else:  # no DLA run of this table: what our ImageNet DLA-L builds by default
        which, values = "of our ImageNet DLA-L", [int(METHODS["dla_l"].knob("reduction").default_for("imagenet"))]
    said = {OFFICIAL_REDUCTION: "the official code's value and our default",
            PAPER_TEXT_REDUCTION: f"the paper's text; the official code uses {OFFICIAL_REDUCTION}"}
    shown = ", ".join(f"{v} ({said[v]})" if v in said else str(v) for v in values)
    return (f"DSU reduction $r$ {which}: {shown}; the paper's text gives {PAPER_TEXT_REDUCTION} for ImageNet, "
            f"its DLA-L-101 \\#P matches {OFFICIAL_REDUCTION}.")


def build(b: Builder) -> Table:
    t = paper.load_table(TABLE.number)
    cols = [(a, tex_escape(c)) for a, c in COLUMNS]
    records, numbers, stats, configs = [], [], [], []
    for r in t.itertuples(index=False):
        cells, nums = {}, {}
        if r.arch:
            params, macs = b.counts.imagenet(r.arch, int(r.depth))
            cells[cols[0]], cells[cols[1]] = fmt(params / 1e6, 1), fmt(macs / 1e9, 2)
            config = b.find(TABLE, dataset="imagenet", arch=r.arch, paper_depth=int(r.depth))
            configs += [config.config_id] if config else []
            s = b.stats(config.config_id if config else "")
        else:
            cells[cols[0]] = cells[cols[1]] = NOT_BUILT_TEX
            s = Stats()
        stats.append(s)
        cells[cols[2]] = mean_std(s.best_mean, s.best_std, 1) + marks(s) if s.n else NOT_RUN_TEX
        cells[cols[3]] = (fmt(s.best_top5_mean, 1) or NA) if s.n else NOT_RUN_TEX
        nums[cols[2]] = s.best_mean
        for col, value in ((cols[4], r.params_m), (cols[5], r.flops_g), (cols[6], r.top1), (cols[7], r.top5)):
            cells[col] = fmt(value, 1) or NA
        nums[cols[6]], nums[cols[7]] = r.top1, r.top5
        records.append(((str(r.depth), tex_escape(r.label)), cells))
        numbers.append(((), nums))
    cells = cell_frame(records, cols, "Model")
    mask = best_mask(numeric_frame(numbers, cells), pd.Series(cells.index.get_level_values(0)),
                     [cols[2], cols[6], cols[7]], digits=1)
    ran = [s for s in stats if s.n]
    caption = (r"Accuracy (\%) on the ImageNet-1K validation set (paper's Table~2). \textbf{Paper (quoted)}: the "
               r"paper's numbers, which it in turn quotes from each method's original paper; FLOPs are "
               r"multiply-accumulates. \textbf{Ours}: exact parameters and multiply-accumulates of our "
               r"implementation at 224$\times$224 (torch's FLOP counter: convolutions and matrix products); "
               + (f"top-1 (mean $\\pm$ sample std) and top-5 of {seed_words(ran)}, both from the epoch of the best "
                  f"top-1, the official code's metric (the paper never says which epoch it reports); {NA}: a run "
                  "that did not record its best-epoch top-5. " if ran else
                  r"no ImageNet runs exist yet (\textit{not run}). ")
               + (r"\textbf{" + SYNTHETIC_NOTE.capitalize() + "}. " if any(s.n_synthetic for s in ran) else "")
               + run_notes(ran) + " "
               + reduction_words(b, configs) + " " + b.dsu_words(configs) + " "
               + rf"\textit{{n/b}}: a method we do not implement; {NA}: not given by the paper. "
               r"Bold: best of each column within a block. Each row against the rows the paper compares it with "
               r"(Welch $p$, two seeds a side needed; the paper ran one per model): comparisons.csv.")
    return Table(TABLE.name, cells, mask, caption, "ll" + "r" * len(cols), fit_width=True)


TABLE = TableSpec("table2", 2, "imagenet", build, experiment="table2", pairs=paper_pairs(2))
