"""Table 4: the recurrent cell inside DLA-L-110 on CIFAR-100 (RNN, LSTM, DIA, DSU)."""

from __future__ import annotations

from ..comparisons import paper_pairs
from ..latex import Table
from ..registry import TableSpec
from ..tablekit import Builder, accuracy_table


def build(b: Builder) -> Table:
    return accuracy_table(
        b, TABLE, ["#P(M)", "Top-1", "Final", "p", "Paper #P(M)", "Paper Top-1"],
        r"Testing accuracy (\%) of different RNN blocks in DLA-L-110 on CIFAR-100 (paper's Table~4).",
        label_header="Block")


TABLE = TableSpec("table4", 4, "ablations", build, experiment="table4", published_top1=True,
                  group=lambda r: "DLA-L-110", pairs=paper_pairs(4))
