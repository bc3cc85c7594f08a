"""Table 5: the activation sigma that normalises the DSU cell state in DLA-L on CIFAR-100."""

from __future__ import annotations

from ..comparisons import paper_pairs
from ..latex import Table
from ..registry import TableSpec
from ..tablekit import Builder, accuracy_table


def build(b: Builder) -> Table:
    return accuracy_table(
        b, TABLE, ["Top-1", "Final", "p", "Paper Top-1"],
        r"Testing accuracy (\%) of the activation $\sigma$ normalising $c^{m-1}$ in DLA-L on CIFAR-100 "
        r"(paper's Table~5).",
        label_header="Function", block_of=lambda r: r.group)


TABLE = TableSpec("table5", 5, "ablations", build, experiment="table5", published_top1=True,
                  group=lambda r: f"DLA-L-{r.depth}", pairs=paper_pairs(5))
