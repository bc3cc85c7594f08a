"""The comparisons behind every table's p column: ``results/<name>/comparisons.csv``.

A table declares its comparisons (``TableSpec.pairs``): for each of its rows, the rows the paper
compares it with (:func:`paper_pairs`, from ``resources/paper/comparisons.yaml``: DLA-x with
ResNet and MRLA-x in Table 1, each cell with the DSU in Table 4, ...) or, for a table beyond the
paper, its own pairs. ``report aggregate`` tests each pair on the seeds of the two configs (a
two-sided Welch t-test) and Holm-corrects the p-values within each table; the tables print the
corrected p-value and its stars (``dlarepro.claims.STAR_RULE``). One line per (row, partner):
summary.csv stays one line per config, and this long-form file keeps every comparison.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..claims import holm, partners, stars
from . import schema
from .context import Context
from .registry import tables
from .rows import model_configs, table_models
from .schema import FLOAT, INT, OPTIONAL_INT

COMPARISONS = schema.columns(
    "table", ("position", INT), "label", "config_id", "metric", "partner", "partner_short", "partner_config_id",
    "partner_metric",
    ("n", OPTIONAL_INT), ("partner_n", OPTIONAL_INT), ("mean", FLOAT), ("partner_mean", FLOAT), ("delta", FLOAT),
    ("p_welch", FLOAT), ("p_holm", FLOAT), "stars", "why")
#: the metric a paper table's p column tests: best top-1 (the official code's number); box AP on COCO
PAPER_METRIC = {3: "bbox_ap"}


@dataclass(frozen=True)
class Pair:
    """One comparison of a table: its row ``position`` (as the table's builder counts rows) against
    a partner; ``partner_short`` names the partner in a table cell."""

    position: int
    label: str
    config_id: str
    metric: str
    partner: str
    partner_short: str
    partner_config_id: str
    partner_metric: str
    why: str


def welch_p(a, b) -> float:
    """Two-sided Welch t-test p-value, NaN when a side has fewer than two values (or no variance)."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def paper_pairs(number: int) -> Callable[[Context], list[Pair]]:
    """The pairs of paper table ``number``: each printed row against the rows the paper compares it
    with, each side the config the report uses for that model (``''`` when none trains it)."""
    metric = PAPER_METRIC.get(number, "best_top1")

    def pairs(ctx: Context) -> list[Pair]:
        models = table_models(ctx, number)
        here = {m.key: m.config_id for m in models.itertuples(index=False) if m.key}
        elsewhere = model_configs(ctx)
        out = []
        for m, found in zip(models.itertuples(index=False), partners(number, models)):
            for p in found:
                partner_config = (here.get(p.key) or elsewhere.get(p.key, "")) if p.key else ""
                out.append(Pair(m.position, m.label, m.config_id, metric, p.label, p.short, partner_config, metric,
                                p.why))
        return out

    return pairs


def table_pairs(ctx: Context) -> dict[str, list[Pair]]:
    """Every table's declared pairs, by table name."""
    return {name: spec.pairs(ctx) for name, spec in tables().items() if spec.pairs is not None}


def compare(ctx: Context, runs: pd.DataFrame) -> list[dict[str, Any]]:
    """One line per declared pair of every table: seeds, means, Welch p, Holm-corrected p within the table."""
    by_config = {cid: g for cid, g in runs.groupby("config_id", sort=False)}

    def values(config_id: str, metric: str) -> np.ndarray:
        g = by_config.get(config_id)
        if g is None or metric not in g:
            return np.array([], dtype=float)
        v = g[metric].to_numpy(dtype=float, na_value=np.nan)
        return v[np.isfinite(v)]

    out = []
    for name, pairs in table_pairs(ctx).items():
        lines = []
        for pair in pairs:
            a, b = values(pair.config_id, pair.metric), values(pair.partner_config_id, pair.partner_metric)
            lines.append({
                "table": name, "position": pair.position, "label": pair.label, "config_id": pair.config_id,
                "metric": pair.metric, "partner": pair.partner, "partner_short": pair.partner_short,
                "partner_config_id": pair.partner_config_id,
                "partner_metric": pair.partner_metric, "n": len(a), "partner_n": len(b),
                "mean": a.mean() if len(a) else np.nan, "partner_mean": b.mean() if len(b) else np.nan,
                "delta": a.mean() - b.mean() if len(a) and len(b) else np.nan, "p_welch": welch_p(a, b),
                "why": pair.why})
        for line, p in zip(lines, holm([line["p_welch"] for line in lines])):
            line["p_holm"] = p
            line["stars"] = stars(p)
        out += lines
    return out


def frame(ctx: Context, runs: pd.DataFrame) -> pd.DataFrame:
    return schema.frame(compare(ctx, runs), COMPARISONS)


def of_table(comparisons: pd.DataFrame, name: str) -> dict[int, list[Any]]:
    """A table's comparisons by row position, in declaration order (what its p column prints)."""
    rows: dict[int, list[Any]] = {}
    for line in comparisons[comparisons.table == name].itertuples(index=False):
        rows.setdefault(int(line.position), []).append(line)
    return rows
