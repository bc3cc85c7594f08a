"""The paper's published numbers: its tables, transcribed as printed into
``resources/paper/table<N>.csv`` (see the README there) and loaded as typed DataFrames.

A table the reports render declares itself in ``dlarepro.reports.tables``; its published numbers
are the CSV of the same number here. The six tables of the paper have their columns pinned below
(the transcription contract); a CSV added later is read with the columns of its header.
"""

from __future__ import annotations

import io
import re
from importlib import resources

import pandas as pd

from .methods import knob_names

_FOLDER = ("resources", "paper")
_NAME = re.compile(r"table([0-9]+)\.csv")

# The exact columns of each transcribed CSV, in order.
COLUMNS = {
    1: ("row", "dataset", "depth", "arch", "label", "params_m", "top1_mean", "top1_std"),
    2: ("row", "depth", "label", "arch", "params_m", "flops_g", "top1", "top5"),
    3: ("row", "detector", "depth", "label", "arch", "params_m", "ap", "ap50", "ap75", "aps", "apm", "apl"),
    4: ("row", "arch", "depth", "dataset", "cell", "label", "params_m", "top1_mean", "top1_std"),
    5: ("row", "arch", "depth", "dataset", "sigma", "label", "top1_mean", "top1_std"),
    6: ("row", "arch", "depth", "dataset", "cell", "label", "params_m", "top1_mean", "top1_std"),
}
#: columns every table has: its row number and the label the paper prints
REQUIRED = ("row", "label")
_INT = {"row", "depth"}
_STR = {"dataset", "arch", "label", "detector"}  # and every method knob (cell, sigma, ...); the rest are floats


def _folder():
    return resources.files("dlarepro").joinpath(*_FOLDER)


def table_numbers() -> tuple[int, ...]:
    """The numbers of every transcribed table (one ``table<N>.csv`` each)."""
    found = (_NAME.fullmatch(entry.name) for entry in _folder().iterdir())
    return tuple(sorted(int(m.group(1)) for m in found if m))


TABLES = table_numbers()


def load_table(number: int) -> pd.DataFrame:
    """Table ``number`` of the paper: ints for row/depth, strings ("" when empty) for names and
    knob values, floats (NaN where the paper prints "-") for the numbers."""
    name = f"table{number}.csv"
    path = _folder() / name
    if not path.is_file():
        raise ValueError(f"unknown paper table {number!r}; the paper has tables "
                         f"{', '.join(map(str, table_numbers()))}")
    df = pd.read_csv(io.StringIO(path.read_text(encoding="utf-8")), dtype=str, keep_default_na=False)
    expected = COLUMNS.get(number) or tuple(dict.fromkeys(REQUIRED + tuple(df.columns)))
    if tuple(df.columns) != expected:
        missing = [c for c in expected if c not in df.columns]
        unexpected = [c for c in df.columns if c not in expected]
        raise ValueError(f"{name}: columns {list(df.columns)} are not the expected {list(expected)} "
                         f"(missing {missing}, unexpected {unexpected})")
    strings = _STR | set(knob_names())
    for col in df.columns:
        if col in _INT:
            df[col] = df[col].astype(int)
        elif col not in strings:
            df[col] = pd.to_numeric(df[col].replace("", float("nan"))).astype(float)
    return df


def knob_columns(df: pd.DataFrame) -> list[str]:
    """The columns of a paper table that set a method knob (Table 4's ``cell``, Table 5's ``sigma``)."""
    return [c for c in df.columns if c in knob_names()]


def defining_knobs() -> tuple[str, ...]:
    """The knobs some paper table varies: together with the method they name the paper's model
    (a row without the column means the default). Other knobs (e.g. ``dsu_state``) are settings
    a run may add without becoming another row."""
    return tuple(dict.fromkeys(c for n in table_numbers() for c in knob_columns(load_table(n))))
