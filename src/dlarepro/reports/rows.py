"""The rows of the paper's CIFAR tables (1, 4, 5, 6) mapped onto the grid's config ids.

A paper row names a model (dataset, method, depth, cell or sigma); the grid names the run that
trains it by a config id (default knob values dropped, depth mapped by the profile). One table
of both is what the summary joins on and what the LaTeX tables iterate over, in the paper's order.
"""

from __future__ import annotations

import pandas as pd

from .. import paper
from .common import Context

CIFAR_TABLES = (1, 4, 5, 6)
COLUMNS = ("table", "row", "group", "label", "dataset", "arch", "paper_depth", "cell", "sigma", "config_id",
           "published_params_m", "published_mean", "published_std")


def _knobs(table: int, r) -> dict[str, str]:
    if table in (4, 6) and r.cell:
        return {"cell": r.cell}
    if table == 5:
        return {"sigma": r.sigma}
    return {}


def _group(table: int, r) -> str:
    """The block a row sits in, as the paper groups it (rules between blocks)."""
    if table == 1:
        return f"ResNet-{r.depth}"
    if table == 5:
        return f"DLA-L-{r.depth}"
    if table == 6:
        return f"ResNet-{r.depth}"
    return "DLA-L-110"


def paper_rows(ctx: Context) -> pd.DataFrame:
    """Every row of Tables 1, 4, 5 and 6 in the paper's order, with the config id that trains it."""
    out = []
    for table in CIFAR_TABLES:
        df = paper.load_table(table)
        for r in df.itertuples(index=False):
            knobs = _knobs(table, r)
            out.append({
                "table": table, "row": int(r.row), "group": _group(table, r), "label": r.label,
                "dataset": r.dataset, "arch": r.arch, "paper_depth": int(r.depth),
                "cell": knobs.get("cell", ""), "sigma": knobs.get("sigma", ""),
                "config_id": ctx.config_id(r.dataset, r.arch, int(r.depth), knobs),
                "published_params_m": float(getattr(r, "params_m", float("nan"))),
                "published_mean": float(r.top1_mean), "published_std": float(r.top1_std),
            })
    return pd.DataFrame(out, columns=list(COLUMNS))
