"""Reading one run folder for the reports: is its ``metrics.json`` a usable record of the run the
index says lives there?

A run counts only if its folder holds a ``metrics.json`` that parses, has every key the reports
use, holds plausible numbers, and names the run of its folder (``run_id`` and the identity under
``run``). A ``run.yaml`` naming another run makes the folder corrupt too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..identity import RUN_FILE, RunIdentity, read_run_file

REQUIRED = ("run", "final_top1", "final_top5", "best_top1", "best_epoch", "epochs", "params", "macs",
            "step_seconds", "wall_seconds", "synthetic")
PERCENT = ("final_top1", "final_top5", "best_top1")
#: COCO runs: box (and for Mask R-CNN mask) AP from pycocotools, in percent
DETECTION_METRICS = tuple(f"{kind}_{m}" for kind in ("bbox", "segm") for m in ("ap", "ap50", "ap75", "aps", "apm", "apl"))
DETECTION_REQUIRED = ("run", "bbox_ap", "params", "wall_seconds", "synthetic")
#: test batch sizes whose ``final_top1_batch<N>`` runs.csv keeps: the batch-coupling experiment evaluates
#: its ``first_image`` runs again at 1 (each image its own first image) and at the recipe's 100
EVAL_BATCH_SIZES = (1, 100)
OK, UNFINISHED, CORRUPT = "ok", "unfinished", "corrupt"


def knob_text(knobs) -> str:
    """``cell=lstm,sigma=tanh``: the knobs of a run as the CSVs show them (never parsed back)."""
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


def _identity_problem(metrics: dict[str, Any], run: RunIdentity) -> str | None:
    ident = metrics["run"]
    if not isinstance(ident, dict):
        return "metrics.json: run is not an object"
    wrong = []
    if "run_id" in metrics and metrics["run_id"] != run.run_id:
        wrong.append(f"run_id={metrics['run_id']!r} (folder: {run.run_id!r})")
    expected = {"dataset": run.dataset, "arch": run.arch, "depth": run.depth, "seed": run.seed}
    if run.detector and "detector" in ident:
        expected["detector"] = run.detector
    wrong += [f"{k}={ident.get(k)!r} (folder: {v!r})" for k, v in expected.items() if ident.get(k) != v]
    got = tuple(sorted((ident.get("knobs") or {}).items())) if isinstance(ident.get("knobs"), dict) else None
    if got is not None and got != run.knobs:
        wrong.append(f"knobs={dict(got)!r} (folder: {run.knob_dict!r})")
    return "metrics.json describes another run: " + ", ".join(wrong) if wrong else None


def check_metrics(metrics: Any, run: RunIdentity) -> str | None:
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
    else:
        why = _numbers_problem(metrics, REQUIRED, (*PERCENT, "params", "macs", "step_seconds", "wall_seconds",
                                                   "epochs", "best_epoch"), PERCENT)
        if not why and metrics["epochs"] < 1:
            why = "metrics.json: epochs must be positive"
    if why:
        return why
    if metrics["params"] <= 0:
        return "metrics.json: params must be positive"
    if not isinstance(metrics["synthetic"], bool):
        return f"metrics.json: synthetic is {metrics['synthetic']!r}, not true/false"
    return _identity_problem(metrics, run)


def read_run(folder: Path, run: RunIdentity) -> tuple[dict[str, Any] | None, str, str]:
    """(metrics or None, status, detail) of one run folder; status is ok, unfinished or corrupt."""
    if (folder / RUN_FILE).is_file():
        try:
            written = read_run_file(folder).identity.run_id
        except ValueError as err:
            return None, CORRUPT, str(err)
        if written != run.run_id:
            return None, CORRUPT, f"{RUN_FILE} describes run {written!r}, not this folder's {run.run_id!r}"
    path = folder / "metrics.json"
    if not path.is_file():
        partial = [p.name for p in (folder / "checkpoint.pt", folder / "history.csv") if p.exists()]
        detail = "no metrics.json" + (f" ({', '.join(partial)} present: interrupted or still training)"
                                      if partial else " (nothing written yet)")
        return None, UNFINISHED, detail
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return None, CORRUPT, f"metrics.json is not valid JSON ({err})"
    why = check_metrics(metrics, run)
    if why:
        return None, CORRUPT, why
    return metrics, OK, ""


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
