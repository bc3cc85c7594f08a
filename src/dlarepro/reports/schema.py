"""The column schemas of the aggregate CSVs, and the one way they are built, written and read.

``frame`` turns rows (dicts from the aggregation, or the strings of a CSV) into a DataFrame with
exactly the declared columns and types; ``to_csv`` writes it, ``read_csv`` reads it back through
``frame`` again. Floats are kept at the ten significant digits the CSV holds, so a frame built in
memory (``report all``) equals the one read back from its file (``report tables`` alone).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .common import ReportError

FLOAT_DIGITS = 10
TEXT, INT, OPTIONAL_INT, FLOAT, FLAG = "text", "int", "optional int", "float", "flag"


@dataclass(frozen=True)
class Column:
    """One CSV column: ``text`` ("" when missing), ``int``, ``optional int`` (empty when missing),
    ``float`` (empty = NaN) or ``flag`` (True/False)."""

    name: str
    kind: str = TEXT


def columns(*specs: str | tuple[str, str]) -> tuple[Column, ...]:
    """``columns("run_id", ("seed", INT), ...)``: a schema, text unless a kind is given."""
    return tuple(Column(s) if isinstance(s, str) else Column(*s) for s in specs)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or value == "" or (isinstance(value, float) and math.isnan(value))


def _text(value: Any) -> str:
    return "" if _missing(value) else str(value)


def _flag(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if str(value) in ("True", "False"):
        return str(value) == "True"
    raise ValueError(f"{value!r} is not True or False")


def _float(value: Any) -> float:
    return math.nan if _missing(value) else float(f"{float(value):.{FLOAT_DIGITS}g}")


def _series(values: list[Any], column: Column) -> pd.Series:
    if column.kind == TEXT:
        return pd.Series([_text(v) for v in values], dtype=str)
    if column.kind == INT:
        return pd.Series([int(float(v)) for v in values], dtype="int64")
    if column.kind == OPTIONAL_INT:
        return pd.Series([pd.NA if _missing(v) else int(float(v)) for v in values], dtype="Int64")
    if column.kind == FLOAT:
        return pd.Series([_float(v) for v in values], dtype=float)
    if column.kind == FLAG:
        return pd.Series([_flag(v) for v in values], dtype=bool)
    raise ValueError(f"column {column.name!r}: unknown kind {column.kind!r}")


def frame(rows: Iterable[dict[str, Any]] | pd.DataFrame, schema: tuple[Column, ...]) -> pd.DataFrame:
    """A DataFrame of exactly ``schema``'s columns and types (a row's missing key counts as empty)."""
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
    data = {}
    for column in schema:
        values = [r.get(column.name) for r in records]
        try:
            data[column.name] = _series(values, column)
        except (TypeError, ValueError) as err:
            raise ReportError(f"column {column.name!r}: {err}") from None
    return pd.DataFrame(data, columns=[c.name for c in schema])


def to_csv(df: pd.DataFrame, schema: tuple[Column, ...]) -> bytes:
    buf = io.StringIO()
    df[[c.name for c in schema]].to_csv(buf, index=False, float_format=f"%.{FLOAT_DIGITS}g", lineterminator="\n")
    return buf.getvalue().encode()


def read_csv(path: Path, schema: tuple[Column, ...], what: str = "") -> pd.DataFrame:
    """``path`` read through ``schema``; a ReportError names a missing column or a bad value."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c.name for c in schema if c.name not in raw.columns]
    if missing:
        raise ReportError(f"{path} lacks the columns {missing} (written by another version?): run "
                          f"`dla-repro report aggregate{what}` again")
    try:
        return frame(raw, schema)
    except ReportError as err:
        raise ReportError(f"{path}: {err}") from None
