"""Table 1: CIFAR-10 and CIFAR-100 accuracy and parameters of every method, rows grouped by depth."""

from __future__ import annotations

import pandas as pd

from ..common import DATASET_NAMES
from ..latex import Table, best_mask, cell_frame, mean_std, numeric_frame, tex_escape
from ..registry import TableSpec
from ..tablekit import Builder, modal

DATASETS = ("cifar10", "cifar100")


def build(b: Builder) -> Table:
    rows = b.rows(TABLE)
    params, top1, final = tex_escape("#P(M)"), "Top-1", "Final"
    cols = [(DATASET_NAMES[d], who, c) for d in DATASETS
            for who, c in (("Ours", params), ("Ours", top1), ("Ours", final), ("Paper", top1))]
    all_stats, records, numbers = [], [], []
    for row_no in sorted(rows.row.unique()):
        block = rows[rows.row == row_no]
        first = block.iloc[0]
        cells, nums = {}, {}
        for d in DATASETS:
            r = next(block[block.dataset == d].itertuples(index=False))
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
    for _, cells in records:  # the seed count that most rows have is said once, in the caption
        for d in DATASETS:
            key = (DATASET_NAMES[d], "Ours", top1)
            cells[key] = b.top1(cells[key], n, star=True)
    cells = cell_frame(records, cols, "Model")
    values = numeric_frame(numbers, cells)
    mask = best_mask(values, pd.Series(cells.index.get_level_values(0)), [c for c in cols if c[2] != params])
    caption = b.caption(
        r"Testing accuracy (\%) on CIFAR-10 and CIFAR-100 (paper's Table~1); rows grouped by depth.",
        all_stats, rows.paper_depth,
        extra=r"\#P(M): parameters of the model trained (million). $^{*}$: $p<0.05$, Welch $t$-test of the best "
              r"top-1 against the ResNet of the same depth (every $p$ is in summary.csv).")
    return Table(TABLE.name, cells, mask, caption, "ll" + "rrrr" * 2, fit_width=True)


TABLE = TableSpec("table1", 1, "cifar", build, experiment="table1", published_top1=True,
                  group=lambda r: f"ResNet-{r.depth}")
