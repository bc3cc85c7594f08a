"""Collect the finished runs of a profile into tables: ``runs.csv`` (one row per run),
``summary.csv`` (one row per config: seed statistics joined with the paper's published value and a
Welch t-test against the ResNet baseline), ``problems.csv`` (run folders that are unfinished,
corrupt or not in the grid: listed, never averaged in), ``headline.json`` (DVC metrics) and
``figure4.csv`` (DVC plots data).

A run counts only if its folder holds a ``metrics.json`` that parses, has every key the reports
use, holds plausible numbers, and describes the run its folder is named after.
"""

from __future__ import annotations

import io as _io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .. import grid as gridlib
from ..methods import METHODS as SPECS
from .common import Context, ReportError, method_names, write_if_changed
from .rows import paper_rows

REQUIRED = ("run", "final_top1", "final_top5", "best_top1", "best_epoch", "epochs", "params", "macs",
            "step_seconds", "wall_seconds", "synthetic")
PERCENT = ("final_top1", "final_top5", "best_top1")
RUN_COLUMNS = ("run_id", "config_id", "experiments", "dataset", "arch", "paper_depth", "depth", "knobs", "seed",
               "best_top1", "best_epoch", "final_top1", "final_top5", "final_test_loss", "epochs", "params", "macs",
               "step_seconds", "wall_seconds", "attempts", "synthetic", "device", "threads", "torch_version",
               "git_commit", "attention_scores")
#: COCO runs: box (and for Mask R-CNN mask) AP from pycocotools, in percent
DETECTION_METRICS = tuple(f"{kind}_{m}" for kind in ("bbox", "segm") for m in ("ap", "ap50", "ap75", "aps", "apm", "apl"))
DETECTION_REQUIRED = ("run", "bbox_ap", "params", "wall_seconds", "synthetic")
RUN_COLUMNS += ("detector", *DETECTION_METRICS, "data_source")
PROBLEM_COLUMNS = ("run_id", "status", "detail", "path")
FIGURE4_COLUMNS = ("dataset", "method", "arch", "depth", "trained_depth", "n", "mean", "std", "final_mean")
FLOAT_FORMAT = "%.10g"


@dataclass
class Aggregate:
    """What ``aggregate`` found; the DataFrames are also written to ``results/<profile>/``."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    problems: pd.DataFrame
    expected: int
    written: list[Path]

    @property
    def finished(self) -> int:
        return len(self.runs)


# ---------------------------------------------------------------------------------------------
# reading one run folder


def knob_text(knobs) -> str:
    return ",".join(f"{k}={v}" for k, v in knobs)


def _numbers_problem(metrics: dict[str, Any], required: tuple[str, ...], numbers: tuple[str, ...],
                     percent: tuple[str, ...]) -> str | None:
    missing = [k for k in required if k not in metrics]
    if missing:
        return f"metrics.json lacks {', '.join(missing)}"
    for key in numbers:
        value = metrics[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"metrics.json: {key} is {value!r}, not a finite number"
    for key in percent:
        if not 0 <= metrics[key] <= 100:
            return f"metrics.json: {key} = {metrics[key]} is not a percentage"
    return None


def check_metrics(metrics: Any, run: gridlib.Run) -> str | None:
    """None if ``metrics`` is a usable record of ``run``, else why not."""
    if not isinstance(metrics, dict):
        return f"metrics.json holds a {type(metrics).__name__}, not an object"
    if run.detector:
        boxes = tuple(m for m in DETECTION_METRICS if m.startswith("bbox"))
        masks = tuple(m for m in DETECTION_METRICS if m.startswith("segm")) if run.detector == "mask_rcnn" else ()
        required = tuple(dict.fromkeys(DETECTION_REQUIRED + boxes + masks))
        # AP by object size may be null (COCOeval's -1) where the images hold no object of that size
        scores = tuple(m for m in boxes + masks if m.endswith(("_ap", "_ap50", "_ap75")) or metrics.get(m) is not None)
        why = _numbers_problem(metrics, required, ("params", "wall_seconds") + scores, scores)
        if why:
            return why
    else:
        why = _numbers_problem(metrics, REQUIRED, (*PERCENT, "params", "macs", "step_seconds", "wall_seconds",
                                                   "epochs", "best_epoch"), PERCENT)
        if why:
            return why
        if metrics["epochs"] < 1:
            return "metrics.json: epochs must be positive"
    if metrics["params"] <= 0:
        return "metrics.json: params must be positive"
    if not isinstance(metrics["synthetic"], bool):
        return f"metrics.json: synthetic is {metrics['synthetic']!r}, not true/false"
    ident = metrics["run"]
    if not isinstance(ident, dict):
        return "metrics.json: run is not an object"
    expected = {"dataset": run.dataset, "arch": run.arch, "depth": run.depth, "seed": run.seed}
    if run.detector and "detector" in ident:
        expected["detector"] = run.detector
    wrong = [f"{k}={ident.get(k)!r} (folder: {v!r})" for k, v in expected.items() if ident.get(k) != v]
    got = tuple(sorted((ident.get("knobs") or {}).items())) if isinstance(ident.get("knobs"), dict) else None
    if got is not None and got != run.knobs:
        wrong.append(f"knobs={dict(got)!r} (folder: {run.knob_dict!r})")
    if wrong:
        return "metrics.json describes another run: " + ", ".join(wrong)
    return None


def read_run(folder: Path, run: gridlib.Run) -> tuple[dict[str, Any] | None, str, str]:
    """(metrics or None, status, detail) of one run folder; status is ok, unfinished or corrupt."""
    path = folder / "metrics.json"
    if not path.is_file():
        partial = [p.name for p in (folder / "checkpoint.pt", folder / "history.csv") if p.exists()]
        detail = "no metrics.json" + (f" ({', '.join(partial)} present: interrupted or still training)"
                                      if partial else " (nothing written yet)")
        return None, "unfinished", detail
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return None, "corrupt", f"metrics.json is not valid JSON ({err})"
    why = check_metrics(metrics, run)
    if why:
        return None, "corrupt", why
    return metrics, "ok", ""


def attention_problem(folder: Path, metrics: dict[str, Any]) -> str | None:
    """Why a run that should have captured attention has no usable scores, or None."""
    name = metrics.get("attention_scores")
    if not name:
        return "metrics.json names no attention_scores file"
    try:
        with np.load(folder / name) as npz:
            scores = npz["scores"]
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same problem
        return f"{name} is unreadable ({type(err).__name__}: {err})"
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        return f"{name}: scores has shape {scores.shape}, not square"
    return None


# ---------------------------------------------------------------------------------------------
# all runs of a profile


def stale_reason(ctx: Context, folder: Path, run_id: str, planned: dict, fingerprints: dict) -> str | None:
    """Why a finished run no longer is the run the grid plans (other config or data), or None:
    such a run is listed in problems.csv, never averaged in (dlarepro.freshness)."""
    from .. import freshness, provenance

    if run_id not in planned:
        return None
    config = planned[run_id].config
    key = (config["dataset"], config["data_root"])
    if key not in fingerprints:
        fingerprints[key] = provenance.fingerprint(*key)
    state = freshness.check(folder, config, fingerprints[key])
    return "; ".join(state.reasons) + " (left out; the workflow retrains it)" if state.stale else None


def collect(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(runs, problems, number of declared runs) of the profile, both sorted by run id."""
    declared = ctx.runs()
    planned, fingerprints = gridlib.plan(ctx.grid, ctx.profile, ctx.root), {}
    rows, problems = [], []
    for run_id, run in declared.items():
        folder = ctx.runs_dir / run_id
        if not folder.is_dir():
            continue  # not started: shows as missing seeds and "not run", not as a problem
        metrics, status, detail = read_run(folder, run)
        stale = stale_reason(ctx, folder, run_id, planned, fingerprints) if metrics is not None else None
        if stale:
            metrics, status, detail = None, "stale", stale
        if metrics is None:
            problems.append({"run_id": run_id, "status": status, "detail": detail,
                             "path": str(folder.relative_to(ctx.root))})
            continue
        if run.capture_attention:
            why = attention_problem(folder, metrics)
            if why:
                problems.append({"run_id": run_id, "status": "no_attention",
                                 "detail": why + " (accuracy used, figure 2 skips it)",
                                 "path": str(folder.relative_to(ctx.root))})
        rows.append({
            "run_id": run_id, "config_id": run.config_id, "experiments": ";".join(sorted(run.experiments)),
            "dataset": run.dataset, "arch": run.arch, "paper_depth": run.paper_depth, "depth": run.depth,
            "knobs": knob_text(run.knobs), "seed": run.seed,
            **{k: metrics.get(k) for k in RUN_COLUMNS[9:]}, "detector": run.detector or "",
            "data_source": (metrics.get("data") or {}).get("source", "unknown"),
        })
    if ctx.runs_dir.is_dir():
        for folder in sorted(p for p in ctx.runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if folder.name not in declared:
                problems.append({"run_id": folder.name, "status": "not_in_grid",
                                 "detail": f"the {ctx.profile!r} grid declares no such run (ignored)",
                                 "path": str(folder.relative_to(ctx.root))})
    runs = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    problems_df = pd.DataFrame(sorted(problems, key=lambda p: (p["run_id"], p["status"])),
                               columns=list(PROBLEM_COLUMNS))
    return runs, problems_df, len(declared)


def welch_p(a, b) -> float:
    """Two-sided Welch t-test p-value, NaN when a side has fewer than two values (or no variance)."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def summarise(ctx: Context, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per declared config: seed statistics, the paper's value, the baseline comparison."""
    declared: dict[str, gridlib.Run] = {}
    expected: dict[str, int] = {}
    experiments: dict[str, set[str]] = {}
    for run in ctx.runs().values():
        declared.setdefault(run.config_id, run)
        expected[run.config_id] = expected.get(run.config_id, 0) + 1
        experiments.setdefault(run.config_id, set()).update(run.experiments)
    published = paper_rows(ctx).drop_duplicates("config_id", keep="first").set_index("config_id")
    by_config = {cid: g for cid, g in runs.groupby("config_id", sort=True)}

    def values(cid: str, col: str) -> np.ndarray:
        g = by_config.get(cid)
        return np.array([], dtype=float) if g is None else g[col].to_numpy(dtype=float)

    out = []
    for cid in sorted(declared):
        run, g = declared[cid], by_config.get(cid)
        n = 0 if g is None else len(g)
        row: dict[str, Any] = {
            "config_id": cid, "experiments": ";".join(sorted(experiments[cid])), "dataset": run.dataset,
            "arch": run.arch, "method": method_names().get(run.arch, run.arch), "paper_depth": run.paper_depth,
            "depth": run.depth, "detector": run.detector or "",
            "knobs": knob_text(run.knobs), "n_expected": expected[cid], "n_seeds": n,
            "seeds": "" if g is None else ";".join(str(s) for s in sorted(g["seed"])),
        }
        for col in ("best_top1", "final_top1"):
            v = values(cid, col)
            row[f"{col}_mean"] = v.mean() if n else np.nan
            row[f"{col}_std"] = v.std(ddof=1) if n >= 2 else np.nan
            row[f"{col}_min"] = v.min() if n else np.nan
            row[f"{col}_max"] = v.max() if n else np.nan
        row["final_top5_mean"] = values(cid, "final_top5").mean() if n else np.nan
        for metric in DETECTION_METRICS:
            v = values(cid, metric)
            row[f"{metric}_mean"] = v.mean() if n and run.detector and np.isfinite(v).all() else np.nan
        row["params"] = _median(values(cid, "params"), int) if n else np.nan
        row["macs"] = _median(values(cid, "macs"), int) if n else np.nan
        row["step_seconds_median"] = _median(values(cid, "step_seconds"), float) if n else np.nan
        row["n_synthetic"] = 0 if g is None else int(g["synthetic"].astype(bool).sum())
        pub = published.loc[cid] if cid in published.index else None
        row["paper_table"] = "" if pub is None else int(pub["table"])
        row["paper_label"] = "" if pub is None else pub["label"]
        row["published_mean"] = np.nan if pub is None else pub["published_mean"]
        row["published_std"] = np.nan if pub is None else pub["published_std"]
        row["published_params_m"] = np.nan if pub is None else pub["published_params_m"]
        # runs on data that is not the official release (md5 sums differ) are not set against the paper
        row["n_not_official"] = 0 if g is None else int((g["data_source"] == "modified").sum())
        row["diff_vs_published"] = (np.nan if row["n_not_official"]
                                    else row["best_top1_mean"] - row["published_mean"])
        base = None if run.arch == "none" else ctx.config_id(run.dataset, "none", run.paper_depth)
        if base is not None and base not in declared:
            base = None
        row["baseline"] = base or ""
        row["baseline_n"] = len(values(base, "best_top1")) if base else np.nan
        row["delta_vs_baseline"] = (row["best_top1_mean"] - values(base, "best_top1").mean()
                                    if base and n and len(values(base, "best_top1")) else np.nan)
        row["p_welch"] = welch_p(values(cid, "best_top1"), values(base, "best_top1")) if base else np.nan
        row["p_welch_final"] = welch_p(values(cid, "final_top1"), values(base, "final_top1")) if base else np.nan
        out.append(row)
    return pd.DataFrame(out)


def _median(v: np.ndarray, kind):
    """Median of a column, NaN when the runs do not record it (e.g. MACs of a detector)."""
    v = v[np.isfinite(v)]
    return kind(np.median(v)) if len(v) else np.nan


def figure4_data(ctx: Context, summary: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of best top-1 per (dataset, method, paper depth) of the figure4 experiment."""
    if "figure4" not in ctx.grid["experiments"]:
        return pd.DataFrame(columns=list(FIGURE4_COLUMNS))
    cids = {r.config_id for r in gridlib.runs_of(ctx.grid, "figure4", ctx.profile) if not r.knobs}
    s = summary[summary.config_id.isin(cids) & (summary.n_seeds > 0)].copy()
    s["order"] = s.arch.map(list(SPECS).index)
    s = s.sort_values(["dataset", "order", "paper_depth"])
    return pd.DataFrame({"dataset": s.dataset, "method": s.method, "arch": s.arch, "depth": s.paper_depth,
                         "trained_depth": s.depth, "n": s.n_seeds, "mean": s.best_top1_mean.round(4),
                         "std": s.best_top1_std.round(4), "final_mean": s.final_top1_mean.round(4)},
                        columns=list(FIGURE4_COLUMNS))


def headline(ctx: Context, summary: pd.DataFrame, finished: int, expected: int, problems: int) -> dict[str, Any]:
    """A flat JSON of headline numbers for ``dvc metrics``: counts, then the mean top-1 of every
    paper row that has finished runs (keys ``table<N>/<dataset>/<arch>[-knob]-<paper depth>/...``)."""
    out: dict[str, Any] = {"runs_expected": expected, "runs_finished": finished, "runs_problems": problems}
    stats = summary.set_index("config_id")
    for r in paper_rows(ctx).itertuples(index=False):
        if r.config_id not in stats.index or stats.loc[r.config_id, "n_seeds"] == 0:
            continue
        s = stats.loc[r.config_id]
        knob = f"-{r.cell}" if r.cell else (f"-{r.sigma}" if r.sigma else "")
        key = f"table{r.table}/{r.dataset}/{r.arch}{knob}-{r.paper_depth}"
        out[f"{key}/best_top1_mean"] = round(float(s.best_top1_mean), 4)
        if r.table == 1:
            out[f"{key}/final_top1_mean"] = round(float(s.final_top1_mean), 4)
        if s.n_seeds >= 2:
            out[f"{key}/best_top1_std"] = round(float(s.best_top1_std), 4)
    return out


def _csv(df: pd.DataFrame) -> bytes:
    buf = _io.StringIO()
    df.to_csv(buf, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    return buf.getvalue().encode()


def aggregate(ctx: Context, echo: Callable[[str], None] = print) -> Aggregate:
    """Scan ``results/<profile>/runs/`` and write the five aggregate files (only those that changed)."""
    if not ctx.runs_dir.is_dir() and not ctx.results_dir.is_dir():
        echo(f"note: {ctx.runs_dir} does not exist yet: every run counts as not run")
    runs, problems, expected = collect(ctx)
    summary = summarise(ctx, runs)
    head = headline(ctx, summary, len(runs), expected, len(problems))
    files = {
        "runs.csv": _csv(runs), "summary.csv": _csv(summary), "problems.csv": _csv(problems),
        "headline.json": (json.dumps(head, indent=2, sort_keys=True, allow_nan=False) + "\n").encode(),
        "figure4.csv": _csv(figure4_data(ctx, summary)),
    }
    written = [ctx.results_dir / name for name, data in files.items() if write_if_changed(ctx.results_dir / name, data)]
    echo(f"{ctx.profile}: {len(runs)} of {expected} declared runs finished, "
         f"{expected - len(runs) - int(problems.status.isin(['unfinished', 'corrupt', 'stale']).sum())} not started, "
         f"{len(problems)} problem(s)")
    for p in problems.itertuples(index=False):
        echo(f"  {p.status:<12} {p.run_id}: {p.detail}")
    return Aggregate(runs, summary, problems, expected, written)


def read_outputs(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs.csv, summary.csv) as written by ``aggregate``; a clear error when they are missing."""
    paths = [ctx.results_dir / "runs.csv", ctx.results_dir / "summary.csv"]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ReportError(f"{', '.join(missing)} not found: run `dla-repro report aggregate --profile "
                          f"{ctx.profile}` first")
    runs = pd.read_csv(paths[0], keep_default_na=False, na_values=[""],
                       dtype={"knobs": str, "experiments": str, "run_id": str, "config_id": str,
                              "attention_scores": str, "git_commit": str, "detector": str})
    summary = pd.read_csv(paths[1], keep_default_na=False, na_values=[""],
                          dtype={"knobs": str, "experiments": str, "seeds": str, "baseline": str,
                                 "paper_label": str, "config_id": str, "detector": str})
    for df in (runs, summary):
        for col in ("knobs", "experiments", "seeds", "baseline", "paper_label", "attention_scores", "detector"):
            if col in df:
                df[col] = df[col].fillna("")
    return runs, summary
