"""Table 1: CIFAR-10 and CIFAR-100 accuracy and parameters of every method, rows grouped by depth.

Per dataset: our parameters beside the paper's, our best-epoch top-1 beside the paper's, our
final-epoch top-1, and the p column (each row against the rows the paper compares it with:
the ResNet of its depth, and MRLA-x for DLA-x).
"""

from __future__ import annotations

import pandas as pd

from ..common import DATASET_NAMES
from ..comparisons import paper_pairs
from ..latex import Table, best_mask, cell_frame, fmt, mean_std, numeric_frame, tex_escape
from ..registry import TableSpec
from ..tablekit import P_WORDS, Builder, modal

DATASETS = ("cifar10", "cifar100")
PARAMS, TOP1, FINAL, P = tex_escape("#P(M)"), "Top-1", "Final", "$p$"
#: per dataset: (quantity, whose) in the order shown
COLUMNS = ((PARAMS, "Ours"), (PARAMS, "Paper"), (TOP1, "Ours"), (TOP1, "Paper"), (FINAL, "Ours"), (P, "Ours"))


def build(b: Builder) -> Table:
    rows = b.rows(TABLE)
    p_cells = b.p_cells(TABLE)
    cols = [(DATASET_NAMES[d], what, who) for d in DATASETS for what, who in COLUMNS]
    all_stats, records, numbers = [], [], []
    for row_no in sorted(rows.row.unique()):
        block = rows[rows.row == row_no]
        first = block.iloc[0]
        cells, nums = {}, {}
        for d in DATASETS:
            position = int(block.index[block.dataset == d][0])  # the row's place in the paper CSV
            r = next(block[block.dataset == d].itertuples(index=False))
            s = b.stats(r.config_id)
            all_stats.append(s)
            name = DATASET_NAMES[d]
            cells[(name, PARAMS, "Ours")] = b.params_m(r, s)
            cells[(name, PARAMS, "Paper")] = fmt(r.published_params_m)
            cells[(name, TOP1, "Ours")] = s
            cells[(name, TOP1, "Paper")] = mean_std(r.published_mean, r.published_std)
            cells[(name, FINAL, "Ours")] = b.final(s)
            cells[(name, P, "Ours")] = b.p_cell(p_cells, position)
            nums[(name, TOP1, "Ours")] = s.best_mean
            nums[(name, TOP1, "Paper")] = r.published_mean
            nums[(name, FINAL, "Ours")] = s.final_mean
        records.append(((str(first.paper_depth), tex_escape(first.label)), cells))
        numbers.append(((), nums))
    n = modal([s.n for s in all_stats])
    for _, cells in records:  # the seed count that most rows have is said once, in the caption
        for d in DATASETS:
            key = (DATASET_NAMES[d], TOP1, "Ours")
            cells[key] = b.top1(cells[key], n)
    cells = cell_frame(records, cols, "Model")
    values = numeric_frame(numbers, cells)
    mask = best_mask(values, pd.Series(cells.index.get_level_values(0)), [c for c in cols if c[1] in (TOP1, FINAL)])
    caption = b.caption(
        r"Testing accuracy (\%) on CIFAR-10 and CIFAR-100 (paper's Table~1); rows grouped by depth.",
        all_stats, rows.paper_depth,
        extra=r"\#P(M): parameters (million), ours of the model trained beside the paper's as printed. "
              + b.dsu_words(rows.config_id) + " " + P_WORDS)
    return Table(TABLE.name, cells, mask, caption, "ll" + "rrrrrr" * 2, fit_width=True)


TABLE = TableSpec("table1", 1, "cifar", build, experiment="table1", published_top1=True,
                  group=lambda r: f"ResNet-{r.depth}", pairs=paper_pairs(1))
