"""``report claims``: a verdict on every claim of the paper from the report's runs
(``results/<name>/claims.csv``), and the DVC metrics (``headline.json``: runs and verdicts).

The claims rest on the runs the tables use (:func:`dlarepro.reports.rows.model_configs`): one
config per model of the paper's tables and of Figure 2, as the tables map their rows. A knob such
a config carries that no paper table varies (``dsu_state=first_image`` in the paper profile) is a
setting of the published model, not another model; any other config (the batch-coupling
experiment's ``per_image`` runs) never enters a published row. The evaluation itself is
:func:`dlarepro.claims.evaluate`; the rules are :mod:`dlarepro.claims.rules`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .. import claims
from .aggregate import Frames, read_outputs
from .common import ReportError, write_if_changed
from .context import Context
from .rows import model_configs

CLAIMS_FILE, HEADLINE_FILE = "claims.csv", "headline.json"
#: knobs that name a paper row (the claims' row keys); any other knob of a published config is a setting
KEY_KNOBS = ("cell", "sigma")
#: claims.csv columns that hold text (the rest are numbers or true/false)
TEXT = ("id", "section", "quote", "kind", "family", "metric", "unit", "published_arithmetic", "verdict",
        "verdict_detail", "row_values", "note")


def measurements(ctx: Context, runs: pd.DataFrame) -> dict[str, dict[str, list[float]]]:
    """Row key -> metric -> per-seed values, from the runs of the configs the tables use."""
    chosen_configs = set(model_configs(ctx).values())
    chosen = runs[runs.config_id.isin(chosen_configs)]
    settings = sorted({k for cid in chosen_configs if cid in ctx.index.configs
                       for k, _ in ctx.index.configs[cid].knobs} - set(KEY_KNOBS))
    folders = {run_id: ctx.index.runs[run_id].folder for run_id in chosen.run_id if run_id in ctx.index.runs}
    return claims.measurements_from_runs(chosen, folders=folders, ignore_knobs=tuple(settings))


def headline(ctx: Context, frames: Frames, verdicts: pd.DataFrame) -> dict[str, Any]:
    """The DVC metrics, one line of ``dvc metrics show`` (about 125 characters): runs finished and
    expected, and the claims per verdict (``reproduced``, ``not_reproduced``, ``inconclusive``,
    ``not_run``). Problems are in problems.csv, the per-row numbers in summary.csv."""
    counts = claims.counts(verdicts)
    return {"runs_finished": len(frames.runs), "runs_expected": len(ctx.index.runs),
            **{v.replace(" ", "_"): counts[v] for v in claims.VERDICTS}}


def read_claims(path: Path) -> pd.DataFrame:
    """claims.csv as written by :func:`dlarepro.claims.write_csv` (``published_holds``: True, False
    or NA where the paper publishes no data); a ReportError names a missing or outdated file."""
    if not path.is_file():
        raise ReportError(f"{path} not found: run `dla-repro report claims` first (or `report all`)")
    df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={c: str for c in TEXT})
    missing = [c for c in claims.COLUMNS if c not in df.columns]
    if missing:
        raise ReportError(f"{path} lacks the columns {missing} (written by another version?): run "
                          f"`dla-repro report claims` again")
    for col in TEXT:
        df[col] = df[col].fillna("")
    df["published_holds"] = df["published_holds"].map({"true": True, "false": False, True: True, False: False}
                                                      ).astype("boolean")
    df["synthetic"] = df["synthetic"].astype(str).str.lower().eq("true")
    return df[list(claims.COLUMNS)]


def claims_of(ctx: Context, frames: Frames | None) -> pd.DataFrame:
    """The claims a report shows: from ``report all``'s frames, else read from claims.csv."""
    if frames is not None and frames.claims is not None:
        return frames.claims
    return read_claims(ctx.results_dir / CLAIMS_FILE)


def write_claims(ctx: Context, echo: Callable[[str], None] = print, frames: Frames | None = None) -> Frames:
    """Evaluate every claim on the report's runs; write claims.csv and headline.json (only if changed).
    ``frames``: the aggregate in memory (``report all``); read from ``results/<profile>/`` otherwise.
    Returns the frames with ``claims`` set (as read back from the file, so every later step sees the
    same numbers whether it runs in this process or alone)."""
    frames = frames if frames is not None else read_outputs(ctx)
    try:
        verdicts = claims.evaluate(measurements=measurements(ctx, frames.runs))
    except (claims.ClaimsError, ValueError) as err:
        raise ReportError(f"claims: {err}") from None
    path = ctx.results_dir / CLAIMS_FILE
    changed = claims.write_csv(verdicts, path)
    head = headline(ctx, frames, verdicts)
    head_changed = write_if_changed(ctx.results_dir / HEADLINE_FILE,
                                    json.dumps(head, indent=2, sort_keys=True, allow_nan=False) + "\n")
    frames.claims = read_claims(path)
    counts = claims.counts(verdicts)
    echo(f"claims: {path} {'written' if changed else 'unchanged'}; {counts['claims']} claims: "
         + ", ".join(f"{counts[v]} {v}" for v in claims.VERDICTS)
         + f"; {counts['published_fails']} disagree with the paper's own tables"
         + (f"; headline.json {'written' if head_changed else 'unchanged'}"))
    if counts["synthetic"]:
        echo(f"  note: {counts['synthetic']} verdicts rest on runs trained on SYNTHETIC data: a pipeline check, "
             "not a reproduction")
    return frames
