"""Table 6: the cell of layer-wise information integration (LII, DIANet's scheme) on CIFAR-100."""

from __future__ import annotations

from ..comparisons import paper_pairs
from ..latex import Table
from ..registry import TableSpec
from ..tablekit import Builder, accuracy_table


def build(b: Builder) -> Table:
    return accuracy_table(
        b, TABLE, ["#P(M)", "Top-1", "Final", "p", "Paper #P(M)", "Paper Top-1"],
        r"Testing accuracy (\%) of different RNN blocks in layer-wise information integration (LII) on "
        r"CIFAR-100 (paper's Table~6).",
        label_header="Block", block_of=lambda r: str(r.paper_depth))


TABLE = TableSpec("table6", 6, "ablations", build, experiment="table6", published_top1=True,
                  group=lambda r: f"ResNet-{r.depth}", pairs=paper_pairs(6))
