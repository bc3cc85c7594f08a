"""The parameter check (beyond the paper, in the appendix): our exact count of every model the
paper lists against its printed #P, differences explained in notes. It runs over a page: a longtable."""

from __future__ import annotations

import pandas as pd

from ..common import DATASET_NAMES
from ..latex import LONGTABLE, Table, cell_frame, fmt, tex_escape
from ..registry import TableSpec
from ..tablekit import Builder

COLUMNS = [("", "Table"), ("", "Dataset"), ("", "Model"), ("Ours", "exact"), ("Ours", "(M)"), ("Paper", "#P(M)"),
           ("", "Status")]


def build(b: Builder) -> Table:
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
    cells = cell_frame(records, COLUMNS, None)
    cells.columns = pd.MultiIndex.from_tuples([(a, tex_escape(c)) for a, c in COLUMNS])
    mask = pd.DataFrame(False, index=cells.index, columns=cells.columns)
    counts = check.status.value_counts()
    caption = (f"Parameter check: our exact count of every model the paper lists (Tables 1, 2, 4 and 6, at the "
               f"paper's depths) against its printed \\#P, rounded as the paper rounds. "
               f"{counts.get('ok', 0)} match, {counts.get('known', 0)} differ for an explained reason "
               f"(notes after the table), {counts.get('MISMATCH', 0)} unexplained mismatches.")
    return Table(TABLE.name, cells, mask, caption, "lllrrrl", layout=LONGTABLE,
                 notes=[f"({letter}) {tex_escape(note)}" for note, letter in notes.items()])


TABLE = TableSpec("params", 9, "params", build, inputs=())
