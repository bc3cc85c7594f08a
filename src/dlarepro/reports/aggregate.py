"""Collect the finished runs of a report into tables: ``runs.csv`` (one row per run),
``summary.csv`` (one row per config: seed statistics joined with the paper's published value and a
Welch t-test against the ResNet baseline), ``comparisons.csv`` (every table's p column: each row
against the rows the paper compares it with, :mod:`.comparisons`), ``problems.csv`` (run folders
that are unfinished, corrupt, duplicated or not in the grid: listed, never averaged in) and the
data files of the figures that declare one (``figure4.csv``: DVC plots data).

Every CSV is built, written and read through its column schema (:mod:`dlarepro.reports.schema`);
``read_outputs`` gives the tables and figures the same frames ``aggregate`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from . import comparisons, registry, schema
from .common import ReportError, method_name, write_if_changed
from .comparisons import COMPARISONS, welch_p
from .context import Context
from .rows import paper_rows
from .runfolder import DETECTION_METRICS, EVAL_BATCH_SIZES, attention_problem, knob_text, read_run, switch_text
from .schema import FLAG, FLOAT, INT, OPTIONAL_INT

RUNS = schema.columns(
    "run_id", "config_id", "experiments", "dataset", "arch", ("paper_depth", INT), ("depth", INT), "knobs",
    ("seed", INT), ("best_top1", FLOAT), ("best_top5", FLOAT), ("best_epoch", OPTIONAL_INT), ("final_top1", FLOAT),
    ("final_top5", FLOAT), ("final_test_loss", FLOAT), *((f"final_top1_batch{b}", FLOAT) for b in EVAL_BATCH_SIZES),
    ("epochs", OPTIONAL_INT), ("params", OPTIONAL_INT), ("macs", OPTIONAL_INT),
    ("step_seconds", FLOAT), ("wall_seconds", FLOAT), ("attempts", OPTIONAL_INT), ("synthetic", FLAG), "device",
    ("threads", OPTIONAL_INT), "torch_version", "git_commit", "attention_scores", "detector",
    *((m, FLOAT) for m in DETECTION_METRICS), "data_source", "switches")
#: the columns of runs.csv copied from metrics.json as they are
METRIC_COLUMNS = tuple(c.name for c in RUNS[RUNS.index(schema.Column("best_top1", FLOAT)):]
                       if c.name not in ("detector", "data_source", "switches"))
SUMMARY = schema.columns(
    "config_id", "experiments", "dataset", "arch", "method", ("paper_depth", INT), ("depth", INT), "detector", "knobs",
    ("n_expected", INT), ("n_seeds", INT), "seeds",
    *((f"{col}_{stat}", FLOAT) for col in ("best_top1", "final_top1") for stat in ("mean", "std", "min", "max")),
    ("final_top5_mean", FLOAT), ("best_top5_mean", FLOAT),
    *((f"final_top1_batch{b}_{stat}", FLOAT) for b in EVAL_BATCH_SIZES for stat in ("mean", "std")),
    *((f"{m}_mean", FLOAT) for m in DETECTION_METRICS),
    ("params", OPTIONAL_INT), ("macs", OPTIONAL_INT), ("step_seconds_median", FLOAT), ("n_synthetic", INT), "switches",
    ("paper_table", OPTIONAL_INT), "paper_label", ("published_mean", FLOAT), ("published_std", FLOAT),
    ("published_params_m", FLOAT), ("n_not_official", INT), ("diff_vs_published", FLOAT), "baseline", ("baseline_n", OPTIONAL_INT),
    ("delta_vs_baseline", FLOAT), ("p_welch", FLOAT), ("p_welch_final", FLOAT))
PROBLEMS = schema.columns("run_id", "status", "detail", "path")


@dataclass
class Frames:
    """The aggregate tables the tables and figures are made from (in memory, or read back)."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    problems: pd.DataFrame
    #: the figures' data files by file name (figure4.csv)
    data: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: every table's comparisons (comparisons.csv)
    comparisons: pd.DataFrame | None = None
    #: claims.csv, once ``report claims`` has written it (None before)
    claims: pd.DataFrame | None = None


@dataclass
class Aggregate(Frames):
    """What ``aggregate`` found; the frames are also written to ``results/<profile>/``."""

    expected: int = 0
    written: list[Path] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return len(self.runs)


def stale_reason(entry, fingerprints: dict) -> str | None:
    """Why a finished run is no longer the run the grid plans (another config or other data), or
    None: such a run is listed in problems.csv, never averaged in (:mod:`dlarepro.freshness`)."""
    from .. import freshness, provenance

    if entry.planned is None:  # a hand-made folder: nothing planned to compare with
        return None
    key = (entry.planned["dataset"], entry.planned["data_root"])
    if key not in fingerprints:
        fingerprints[key] = provenance.fingerprint(*key)
    state = freshness.check(entry.folder, entry.planned, fingerprints[key])
    return "; ".join(state.reasons) + " (left out; the workflow retrains it)" if state.stale else None


def collect(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(runs, problems, number of runs described) of the report, both sorted by run id."""
    index = ctx.index
    rows, problems = [], [{**p, "path": ctx.shown(Path(p["path"]))} for p in index.problems]
    fingerprints: dict = {}
    for run_id, entry in index.runs.items():
        folder, run = entry.folder, entry.identity
        if not folder.is_dir():
            continue  # not started: shows as missing seeds and "not run", not as a problem
        metrics, status, detail = read_run(folder, run)
        stale = stale_reason(entry, fingerprints) if metrics is not None else None
        if stale:
            metrics, status, detail = None, "stale", stale
        if metrics is None:
            problems.append({"run_id": run_id, "status": status, "detail": detail, "path": ctx.shown(folder)})
            continue
        if entry.capture_attention:
            why = attention_problem(folder, metrics)
            if why:
                problems.append({"run_id": run_id, "status": "no_attention",
                                 "detail": why + " (accuracy used, figure 2 skips it)", "path": ctx.shown(folder)})
        rows.append({
            "run_id": run_id, "config_id": run.config_id, "experiments": ";".join(sorted(run.experiments)),
            "dataset": run.dataset, "arch": run.arch, "paper_depth": run.paper_depth, "depth": run.depth,
            "knobs": knob_text(run.knobs), "seed": run.seed, **{k: metrics.get(k) for k in METRIC_COLUMNS},
            "detector": run.detector or "", "data_source": (metrics.get("data") or {}).get("source", "unknown"),
            "switches": switch_text(metrics.get("switches")),
        })
    if ctx.from_grid and ctx.runs_dir.is_dir():
        for folder in sorted(p for p in ctx.runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if folder.name not in index.runs:
                problems.append({"run_id": folder.name, "status": "not_in_grid",
                                 "detail": f"the {ctx.profile!r} grid declares no such run (ignored)",
                                 "path": ctx.shown(folder)})
    problems.sort(key=lambda p: (p["run_id"], p["status"]))
    return schema.frame(rows, RUNS), schema.frame(problems, PROBLEMS), len(index.runs)


def _mean(v: np.ndarray) -> float:
    """Mean of the finite values (runs written before a metric existed lack it), NaN when none."""
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else np.nan


def _median(v: np.ndarray, kind):
    """Median of a column, NaN when the runs do not record it (e.g. MACs of a detector)."""
    v = v[np.isfinite(v)]
    return kind(np.median(v)) if len(v) else np.nan


def summarise(ctx: Context, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per config the report describes: seed statistics, the paper's value, the baseline comparison."""
    index = ctx.index
    published = paper_rows(ctx)
    published = published[published.config_id != ""].drop_duplicates("config_id", keep="first").set_index("config_id")
    by_config = {cid: g for cid, g in runs.groupby("config_id", sort=True)}

    def values(cid: str, col: str) -> np.ndarray:
        g = by_config.get(cid)
        return np.array([], dtype=float) if g is None else g[col].to_numpy(dtype=float, na_value=np.nan)

    out = []
    for cid, config in index.configs.items():
        g = by_config.get(cid)
        n = 0 if g is None else len(g)
        row: dict[str, Any] = {
            "config_id": cid, "experiments": ";".join(sorted(config.experiments)), "dataset": config.dataset,
            "arch": config.arch, "method": method_name(config.arch), "paper_depth": config.paper_depth,
            "depth": config.depth, "detector": config.detector or "", "knobs": knob_text(config.knobs),
            "n_expected": len(config.run_ids), "n_seeds": n,
            "seeds": "" if g is None else ";".join(str(s) for s in sorted(g["seed"])),
        }
        for col in ("best_top1", "final_top1"):
            v = values(cid, col)
            row[f"{col}_mean"] = v.mean() if n else np.nan
            row[f"{col}_std"] = v.std(ddof=1) if n >= 2 else np.nan
            row[f"{col}_min"] = v.min() if n else np.nan
            row[f"{col}_max"] = v.max() if n else np.nan
        row["final_top5_mean"] = values(cid, "final_top5").mean() if n else np.nan
        row["best_top5_mean"] = _mean(values(cid, "best_top5"))
        for b in EVAL_BATCH_SIZES:
            v = values(cid, f"final_top1_batch{b}")
            v = v[np.isfinite(v)]
            row[f"final_top1_batch{b}_mean"] = _mean(v)
            row[f"final_top1_batch{b}_std"] = v.std(ddof=1) if len(v) >= 2 else np.nan
        for metric in DETECTION_METRICS:
            v = values(cid, metric)
            row[f"{metric}_mean"] = v.mean() if n and config.detector and np.isfinite(v).all() else np.nan
        row["params"] = _median(values(cid, "params"), int) if n else np.nan
        row["macs"] = _median(values(cid, "macs"), int) if n else np.nan
        row["step_seconds_median"] = _median(values(cid, "step_seconds"), float) if n else np.nan
        row["n_synthetic"] = 0 if g is None else int(g["synthetic"].sum())
        # non-default speed switches of any seed (bf16 autocast, compile, ...): the tables mark the row
        row["switches"] = "" if g is None else ",".join(sorted({w for s in g["switches"] for w in s.split(",") if w}))
        pub = published.loc[cid] if cid in published.index else None
        row["paper_table"] = None if pub is None else int(pub["table"])
        row["paper_label"] = "" if pub is None else pub["label"]
        for key in ("published_mean", "published_std", "published_params_m"):
            row[key] = np.nan if pub is None else pub[key]
        # runs on data that is not the official release (md5 sums differ) are not set against the paper
        row["n_not_official"] = 0 if g is None else int((g["data_source"] == "modified").sum())
        row["diff_vs_published"] = (np.nan if row["n_not_official"]
                                    else row["best_top1_mean"] - row["published_mean"])
        base = index.baseline(config)
        base_id = base.config_id if base else ""
        base_best = values(base_id, "best_top1")
        row["baseline"] = base_id
        row["baseline_n"] = len(base_best) if base else None
        row["delta_vs_baseline"] = row["best_top1_mean"] - base_best.mean() if base and n and len(base_best) else np.nan
        row["p_welch"] = welch_p(values(cid, "best_top1"), base_best) if base else np.nan
        row["p_welch_final"] = welch_p(values(cid, "final_top1"), values(base_id, "final_top1")) if base else np.nan
        out.append(row)
    return schema.frame(out, SUMMARY)


def aggregate(ctx: Context, echo: Callable[[str], None] = print) -> Aggregate:
    """Read every run folder of the report and write the aggregate files (only those that changed)."""
    if ctx.from_grid and not ctx.runs_dir.is_dir() and not ctx.results_dir.is_dir():
        echo(f"note: {ctx.runs_dir} does not exist yet: every run counts as not run")
    runs, problems, expected = collect(ctx)
    summary = summarise(ctx, runs)
    data = {spec.data_file: schema.frame(spec.data(ctx, summary), spec.data_schema)
            for spec in registry.figures().values() if spec.data_file}
    compared = comparisons.frame(ctx, runs)
    files = {"runs.csv": schema.to_csv(runs, RUNS), "summary.csv": schema.to_csv(summary, SUMMARY),
             "comparisons.csv": schema.to_csv(compared, COMPARISONS), "problems.csv": schema.to_csv(problems, PROBLEMS)}
    for spec in registry.figures().values():
        if spec.data_file:
            files[spec.data_file] = schema.to_csv(data[spec.data_file], spec.data_schema)
    written = [ctx.results_dir / name for name, blob in files.items() if write_if_changed(ctx.results_dir / name, blob)]
    started = problems.run_id.isin(list(ctx.index.runs)) & problems.status.isin(["unfinished", "corrupt", "stale"])
    not_started = expected - len(runs) - int(started.sum())
    echo(f"{ctx.profile}: {len(runs)} of {expected} {'declared ' if ctx.from_grid else ''}runs finished, "
         f"{not_started} not started, {len(problems)} problem(s)")
    for p in problems.itertuples(index=False):
        echo(f"  {p.status:<12} {p.run_id}: {p.detail}")
    return Aggregate(runs, summary, problems, data, compared, None, expected, written)


def read_outputs(ctx: Context) -> Frames:
    """The frames ``aggregate`` wrote, read through their schemas; a clear error when missing."""
    paths = {name: ctx.results_dir / name for name in registry.aggregate_files() if name.endswith(".csv")}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        again = f"--profile {ctx.profile}" if ctx.from_grid else "--runs ..."
        raise ReportError(f"{', '.join(missing)} not found: run `dla-repro report aggregate {again}` first")
    data = {spec.data_file: schema.read_csv(paths[spec.data_file], spec.data_schema)
            for spec in registry.figures().values() if spec.data_file}
    return Frames(schema.read_csv(paths["runs.csv"], RUNS), schema.read_csv(paths["summary.csv"], SUMMARY),
                  schema.read_csv(paths["problems.csv"], PROBLEMS), data,
                  schema.read_csv(paths["comparisons.csv"], COMPARISONS))
