"""The paper's models mapped onto the configs that train them.

Every table that declares ``published_top1`` (Tables 1, 4, 5, 6: one CIFAR model per row with a
published top-1 mean and std) contributes its rows, in the paper's order. A row names a model by
attributes (dataset, method, paper depth, the knob columns of its CSV: ``cell``, ``sigma``);
:meth:`RunIndex.find` returns the config that trains it, preferring one of the table's
experiment. summary.csv joins these rows, the tables iterate them.

:func:`table_models` does the same for any printed table (Tables 2 and 3 too), keyed by the
claims' row keys (:func:`dlarepro.claims.row_key`); :func:`model_configs` gathers every model of
the paper's tables and of Figure 2's claims: the runs the tables use, and so the runs the
claims and the p columns rest on.
"""

from __future__ import annotations

import functools

import pandas as pd

from .. import paper
from ..claims import load as load_claims, row_key
from ..methods import METHODS
from .context import Context
from .registry import TableSpec, figures, tables

COLUMNS = ("table", "row", "group", "label", "dataset", "arch", "paper_depth", "knobs", "knob_values", "config_id",
           "published_params_m", "published_mean", "published_std")
#: the dataset of the rows of Tables 2 (ImageNet) and 3 (COCO), which have no dataset column
TABLE_DATASET = {2: "imagenet", 3: "coco"}
MODELS = ("table", "position", "label", "dataset", "arch", "paper_depth", "detector", "cell", "sigma", "key",
          "config_id")


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


def _experiments(specs, number: int) -> tuple[str, ...]:
    spec = next((s for s in specs if s.number == number), None)
    return (spec.experiment,) if spec is not None and spec.experiment else ()


def table_models(ctx: Context, number: int) -> pd.DataFrame:
    """Every printed row of paper table ``number`` (``position``: its place in the CSV), its row key
    ('' for a model this project does not build) and the config that trains it ('' if none)."""
    df = paper.load_table(number)
    experiments = _experiments(tables().values(), number)
    out = []
    for position, r in enumerate(df.itertuples(index=False)):
        fields = {"dataset": getattr(r, "dataset", "") or TABLE_DATASET.get(number, ""), "arch": r.arch,
                  "detector": getattr(r, "detector", ""), "cell": getattr(r, "cell", ""),
                  "sigma": getattr(r, "sigma", "")}
        key = config = ""
        if r.arch in METHODS:
            key = row_key(fields["dataset"], r.arch, int(r.depth), detector=fields["detector"], cell=fields["cell"],
                          sigma=fields["sigma"])
            found = ctx.index.find(dataset=fields["dataset"], arch=r.arch, paper_depth=int(r.depth),
                                   detector=fields["detector"] or None, knobs=row_knobs(df, r),
                                   experiments=experiments)
            config = found.config_id if found else ""
        out.append({"table": number, "position": position, "label": r.label, "paper_depth": int(r.depth), **fields,
                    "key": key, "config_id": config})
    return pd.DataFrame(out, columns=list(MODELS))


@functools.lru_cache(maxsize=1)
def _figure_models() -> tuple[tuple[int, str, str, int], ...]:
    """(figure, dataset, arch, depth) of every model a figure claim names (the paper prints no rows)."""
    found = {(c.figure, r.fields["dataset"], r.fields["arch"], int(r.fields["depth"]))
             for c in load_claims() if c.figure for p in c.parts for r in p.rows()}
    return tuple(sorted(found))


def model_configs(ctx: Context) -> dict[str, str]:
    """Row key -> config id of the runs that stand for each model of the paper's tables (in table
    order: a model in several tables takes its first table's config) and of Figure 2's claims."""
    out: dict[str, str] = {}
    for number in paper.TABLES:
        for m in table_models(ctx, number).itertuples(index=False):
            if m.key and m.config_id:
                out.setdefault(m.key, m.config_id)
    for figure, dataset, arch, depth in _figure_models():
        config = ctx.index.find(dataset=dataset, arch=arch, paper_depth=depth,
                                experiments=_experiments(figures().values(), figure))
        if config is not None:
            out.setdefault(row_key(dataset, arch, depth), config.config_id)
    return out
