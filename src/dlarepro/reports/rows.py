"""The paper's per-model accuracy rows mapped onto the configs that train them.

Every table that declares ``published_top1`` (Tables 1, 4, 5, 6: one CIFAR model per row with a
published top-1 mean and std) contributes its rows, in the paper's order. A row names a model by
attributes (dataset, method, paper depth, the knob columns of its CSV: ``cell``, ``sigma``);
:meth:`RunIndex.find` returns the config that trains it, preferring one of the table's
experiment. summary.csv joins these rows, headline.json reports them, the tables iterate them.
"""

from __future__ import annotations

import pandas as pd

from .. import paper
from ..methods import METHODS
from .context import Context
from .registry import TableSpec, tables

COLUMNS = ("table", "row", "group", "label", "dataset", "arch", "paper_depth", "knobs", "knob_values", "config_id",
           "published_params_m", "published_mean", "published_std")


def row_knobs(df: pd.DataFrame, r) -> dict[str, str]:
    """The knobs a paper row sets (its CSV's knob columns; empty = the method's default)."""
    return {k: getattr(r, k) for k in paper.knob_columns(df) if getattr(r, k) != ""}


def table_rows(ctx: Context, spec: TableSpec) -> pd.DataFrame:
    """The rows of one ``published_top1`` table, each with the config id that trains it ('' if none)."""
    df = paper.load_table(spec.number)
    out = []
    for r in df.itertuples(index=False):
        given = row_knobs(df, r)
        config = ctx.index.find(dataset=r.dataset, arch=r.arch, paper_depth=int(r.depth), knobs=given,
                                experiments=(spec.experiment,) if spec.experiment else ())
        spec_knobs = METHODS[r.arch].id_knobs(r.dataset, given) if r.arch in METHODS else ()
        out.append({
            "table": spec.number, "row": int(r.row), "group": spec.group(r) if spec.group else "", "label": r.label,
            "dataset": r.dataset, "arch": r.arch, "paper_depth": int(r.depth),
            # the model the row stands for: the config's knobs when it is trained, else the row's own
            "knobs": config.knobs if config else spec_knobs,
            "knob_values": "".join(f"-{v}" for v in given.values()),
            "config_id": config.config_id if config else "",
            "published_params_m": float(getattr(r, "params_m", float("nan"))),
            "published_mean": float(r.top1_mean), "published_std": float(r.top1_std),
        })
    return pd.DataFrame(out, columns=list(COLUMNS))


def paper_rows(ctx: Context) -> pd.DataFrame:
    """Every row of every ``published_top1`` table, tables in number order."""
    specs = sorted((s for s in tables().values() if s.published_top1), key=lambda s: s.number)
    frames = [table_rows(ctx, s) for s in specs]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
