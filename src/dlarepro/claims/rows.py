"""Rows of the paper's tables as printed, and the keys that name the model behind each row.

A claim names rows with *selectors*: a mapping of table fields to a value or a list of values
(``{dataset: cifar10, arch: [se, eca], depth: 20}``; ``table: 1`` takes the row from another table
than the claim's). Values are kept as the printed strings (``0.80`` stays ``0.80``) so that every
check knows the printed precision of each number.

A *row key* names the model a row describes, independent of the table it is printed in:
``dataset/arch/depth`` plus ``detector=…``, ``cell=…`` or ``sigma=…`` when they are not the method's
default (Table 4's DSU row and Table 1's DLA-L-110 on CIFAR-100 are the same model, key
``cifar100/dla_l/110``). Measured seed values are handed to the claims under these keys.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

import pandas as pd

from ..methods import METHODS
from ..paper import COLUMNS, TABLES

#: the claims' metric names -> the column of the table CSVs (top-1: ``top1_mean`` in the tables
#: with five runs a row, ``top1`` in Table 2; see :meth:`Row.column`)
METRIC_COLUMNS = {
    "top1": "top1_mean", "top5": "top5", "params_m": "params_m", "flops_g": "flops_g",
    "ap": "ap", "ap50": "ap50", "ap75": "ap75", "aps": "aps", "apm": "apm", "apl": "apl",
}
#: deterministic properties of a model: no seed spread, compared as exact counts
DETERMINISTIC = ("params_m", "flops_g")
#: Figure 2's numbers (per run, from ``attention_stage3.npz``); the paper publishes no data for them
FIGURE_METRICS = ("attention_input_std", "attention_entropy", "attention_off_peak")
UNITS = {"top1": "points", "top5": "points", "params_m": "M", "flops_g": "G", "ap": "points", "ap50": "points",
         "ap75": "points", "aps": "points", "apm": "points", "apl": "points",
         "attention_input_std": "score std", "attention_entropy": "nats", "attention_off_peak": "share"}
#: fields a selector may name (besides ``table``)
FIELDS = ("dataset", "detector", "arch", "depth", "label", "cell", "sigma")
#: the dataset of the rows of Tables 2 (ImageNet) and 3 (COCO), which have no dataset column
TABLE_DATASET = {2: "imagenet", 3: "coco"}


@dataclass(frozen=True)
class Row:
    """One printed row: which table, its fields and its printed numbers."""

    table: int
    index: int  # position in the table's CSV (0-based)
    fields: Mapping[str, str]
    printed: Mapping[str, str]

    @property
    def key(self) -> str | None:
        """The model's row key; None for a method this project does not build (CBAM, RLAg, BA...)."""
        f = self.fields
        if not f["arch"]:
            return None
        return row_key(f["dataset"], f["arch"], int(f["depth"]), detector=f.get("detector", ""),
                       cell=f.get("cell", ""), sigma=f.get("sigma", ""))

    def name(self) -> str:
        """How a reader finds the row: 'Table 1, CIFAR-10, DLA-L (ours)-20'."""
        f = self.fields
        if self.table == 0:
            return f"{METHODS[f['arch']].display}-{f['depth']} on {f['dataset']} (figure data: our runs only)"
        where = [f"Table {self.table}"]
        if self.table == 3:
            where.append(f["detector"].replace("_", " ").title().replace("Rcnn", "R-CNN"))
        elif f["dataset"] in ("cifar10", "cifar100"):
            where.append({"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[f["dataset"]])
        within = {4: f" cell in DLA-L-{f['depth']}", 5: f" in DLA-L-{f['depth']}", 6: f" on ResNet-{f['depth']}"}
        plain = self.table not in within or f["arch"] == "none"
        return ", ".join(where) + ", " + self.model_name() + (f"-{f['depth']}" if plain else within[self.table])

    def model_name(self) -> str:
        """The row's model without its depth: 'ResNet', 'DLA-L', 'LII (DSU)', 'Tanh'."""
        label, depth = self.fields["label"].replace(" (ours)", ""), self.fields["depth"]
        return label[: -len(depth) - 1] if label.endswith(f"-{depth}") else label

    def column(self, metric: str) -> str:
        """The CSV column holding ``metric`` in this row's table."""
        column = METRIC_COLUMNS[metric]
        return "top1" if column == "top1_mean" and column not in self.printed else column

    def value(self, metric: str) -> Decimal | None:
        """The printed value of ``metric`` (exact, as printed), None where the paper prints '-'."""
        text = self.printed.get(self.column(metric), "")
        return Decimal(text) if text else None

    def std(self, metric: str) -> Decimal | None:
        text = self.printed.get("top1_std", "") if metric == "top1" else ""
        return Decimal(text) if text else None


def row_key(dataset: str, arch: str, depth: int, *, detector: str = "", cell: str = "", sigma: str = "") -> str:
    """``dataset/arch/depth[/detector=…][/cell=…][/sigma=…]``, knobs at their default left out."""
    spec = METHODS.get(arch)
    if spec is None:
        raise ValueError(f"unknown arch {arch!r}; choose one of {list(METHODS)}")
    family = "imagenet" if dataset in ("imagenet", "coco") else "cifar"
    defaults = spec.defaults(family)
    parts = [dataset, arch, str(int(depth))]
    if detector:
        parts.append(f"detector={detector}")
    for name, value in (("cell", cell), ("sigma", sigma)):
        if value and defaults.get(name) != value:
            parts.append(f"{name}={value}")
    return "/".join(parts)


@lru_cache(maxsize=None)
def printed_table(number: int) -> tuple[Row, ...]:
    """Table ``number`` as printed: every field and number a string, exactly as in the CSV."""
    if number not in TABLES:
        raise ValueError(f"unknown paper table {number!r}; the paper has tables {', '.join(map(str, TABLES))}")
    text = (resources.files("dlarepro") / "resources" / "paper" / f"table{number}.csv").read_text(encoding="utf-8")
    df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    if tuple(df.columns) != COLUMNS[number]:
        raise ValueError(f"table{number}.csv: columns {list(df.columns)} are not {list(COLUMNS[number])}")
    rows = []
    for i, record in enumerate(df.to_dict("records")):
        fields = {k: record.get(k, "") for k in FIELDS}
        fields["dataset"] = record.get("dataset") or TABLE_DATASET.get(number, "")
        printed = {k: v for k, v in record.items() if k not in FIELDS and k != "row"}
        rows.append(Row(number, i, fields, printed))
    return tuple(rows)


def matches(row: Row, selector: Mapping[str, Any]) -> bool:
    """Whether ``row`` has every field value the selector asks for (a list: any of them)."""
    for name, wanted in selector.items():
        if name == "table":
            continue
        options = wanted if isinstance(wanted, list) else [wanted]
        if row.fields.get(name, "") not in {str(o) for o in options}:
            return False
    return True


def select(table: int, selector: Mapping[str, Any], within: Mapping[str, str] | None = None) -> list[Row]:
    """The rows of ``selector['table']`` (default: ``table``) matching the selector and the group's
    field values ``within`` (a ``per`` group, e.g. ``{dataset: cifar10, depth: 56}``)."""
    source = int(selector.get("table", table))
    rows = printed_table(source)
    # a group's field constrains the rows too (and contradicts a selector asking for another value),
    # unless the source table does not have that field (a cross-table row of Table 1 in a per-detector group)
    extra = {k: v for k, v in (within or {}).items() if any(r.fields.get(k) for r in rows)}
    return [r for r in rows if matches(r, selector) and matches(r, extra)]


def half_unit(value: Decimal) -> Decimal:
    """Half a unit in the last printed digit: 92.96 -> 0.005, 78.0 -> 0.05, 25 -> 0.5."""
    exponent = value.as_tuple().exponent
    return Decimal(5).scaleb(int(exponent) - 1)


def fmt(value: Decimal | float) -> str:
    """A number as the arithmetic shows it: a Decimal as printed, a float to 4 significant digits."""
    if isinstance(value, Decimal):
        return format(value, "f")
    return f"{value:.4g}"
