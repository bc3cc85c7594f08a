"""The paper's published numbers: Tables 1-6 of "Strengthening Layer Interaction via Dynamic
Layer Attention", transcribed as printed into ``resources/paper/table<N>.csv`` (see the README
there) and loaded as typed DataFrames."""

from __future__ import annotations

import io
from importlib import resources

import pandas as pd

TABLES = (1, 2, 3, 4, 5, 6)

# The exact columns of each CSV, in order.
COLUMNS = {
    1: ("row", "dataset", "depth", "arch", "label", "params_m", "top1_mean", "top1_std"),
    2: ("row", "depth", "label", "arch", "params_m", "flops_g", "top1", "top5"),
    3: ("row", "detector", "depth", "label", "arch", "params_m", "ap", "ap50", "ap75", "aps", "apm", "apl"),
    4: ("row", "arch", "depth", "dataset", "cell", "label", "params_m", "top1_mean", "top1_std"),
    5: ("row", "arch", "depth", "dataset", "sigma", "label", "top1_mean", "top1_std"),
    6: ("row", "arch", "depth", "dataset", "cell", "label", "params_m", "top1_mean", "top1_std"),
}
_INT = {"row", "depth"}
_STR = {"dataset", "arch", "label", "cell", "sigma", "detector"}  # every other column is a float


def load_table(number: int) -> pd.DataFrame:
    """Table ``number`` of the paper: ints for row/depth, floats (NaN where the paper prints
    "-") for the numbers, strings ("" when empty) for the rest."""
    if number not in COLUMNS:
        raise ValueError(f"unknown paper table {number!r}; the paper has tables {', '.join(map(str, TABLES))}")
    name = f"table{number}.csv"
    text = (resources.files("dlarepro") / "resources" / "paper" / name).read_text(encoding="utf-8")
    df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    expected = COLUMNS[number]
    if tuple(df.columns) != expected:
        missing = [c for c in expected if c not in df.columns]
        unexpected = [c for c in df.columns if c not in expected]
        raise ValueError(f"{name}: columns {list(df.columns)} are not the expected {list(expected)} "
                         f"(missing {missing}, unexpected {unexpected})")
    for col in df.columns:
        if col in _INT:
            df[col] = df[col].astype(int)
        elif col not in _STR:
            df[col] = pd.to_numeric(df[col].replace("", float("nan"))).astype(float)
    return df
