"""The claims' measured input from the reports' per-run table (``results/<profile>/runs.csv``):
row key -> metric -> one value per finished seed.

Every model is named by its row key (:func:`dlarepro.claims.rows.row_key`): dataset, arch, the
paper's depth, detector, and the cell or sigma when not the default. Any other knob names a model
the paper's tables do not have; such runs are left out unless the knob is listed in
``ignore_knobs`` (for instance ``dsu_state`` when the profile runs the published rows with the
official code's setting). Two different configurations that would land on one key are an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .attention import METRICS as ATTENTION_METRICS, stats_from_file
from .measured import SYNTHETIC
from .rows import row_key

#: runs.csv column -> metric for detection runs (box AP, in percent)
DETECTION = {"bbox_ap": "ap", "bbox_ap50": "ap50", "bbox_ap75": "ap75", "bbox_aps": "aps", "bbox_apm": "apm",
             "bbox_apl": "apl"}
KEY_KNOBS = ("cell", "sigma")


def _missing(value: Any) -> bool:
    """None, NaN or pandas' NA (a whole-number column of an in-memory runs frame is ``Int64``)."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _knobs(text: str) -> dict[str, str]:
    if not isinstance(text, str) or not text.strip():
        return {}
    return dict(item.split("=", 1) for item in text.split(",") if "=" in item)


def measurements_from_runs(runs: pd.DataFrame, *, top1: str = "best_top1", runs_dir: str | os.PathLike | None = None,
                           ignore_knobs: Sequence[str] = (), folders: Mapping[str, str | os.PathLike] | None = None
                           ) -> dict[str, dict[str, list[float]]]:
    """``{row key: {metric: [value per run]}}`` from a runs.csv-shaped DataFrame (one line per finished
    run; read from the CSV or the reports' in-memory frame, whose missing numbers are ``pd.NA``).
    ``top1``: the column that is top-1 (``best_top1``, the official code's number, or
    ``final_top1``). Figure 2's numbers are read from each run's attention file, in
    ``folders[run_id]`` or else ``runs_dir/<run_id>`` (neither given: not read)."""
    if top1 not in ("best_top1", "final_top1"):
        raise ValueError(f"top1={top1!r}: choose best_top1 or final_top1")
    out: dict[str, dict[str, list[float]]] = {}
    origin: dict[str, str] = {}
    for r in runs.to_dict("records"):
        knobs = _knobs(r.get("knobs", ""))
        other = {k: v for k, v in knobs.items() if k not in KEY_KNOBS and k not in ignore_knobs}
        if other:
            continue  # not a model of the paper's tables
        detector = r.get("detector")
        detector = "" if _missing(detector) or not detector else str(detector)  # NaN from an empty CSV cell
        key = row_key(str(r["dataset"]), str(r["arch"]), int(r["paper_depth"]), detector=detector,
                      cell=knobs.get("cell", ""), sigma=knobs.get("sigma", ""))
        config = str(r.get("config_id", key))
        if origin.setdefault(key, config) != config:
            raise ValueError(f"runs of {origin[key]!r} and {config!r} both describe the paper row {key!r}; "
                             f"keep one of them (the knobs that differ are not in the paper's tables)")
        metrics = out.setdefault(key, {})

        def add(metric: str, value) -> None:
            if not _missing(value):
                metrics.setdefault(metric, []).append(float(value))

        if detector:
            for column, metric in DETECTION.items():
                add(metric, r.get(column))
        else:
            add("top1", r.get(top1))
            add("flops_g", _scaled(r.get("macs"), 1e9))
        add("params_m", _scaled(r.get("params"), 1e6))
        if "synthetic" in r:  # carried along so that every claim resting on synthetic runs says so
            add(SYNTHETIC, 1.0 if str(r["synthetic"]).lower() in ("true", "1", "1.0") else 0.0)
        name = r.get("attention_scores")
        folder = (folders or {}).get(str(r["run_id"]))
        if folder is None and runs_dir is not None:
            folder = Path(runs_dir) / str(r["run_id"])
        if folder is not None and isinstance(name, str) and name:
            stats = stats_from_file(Path(folder) / name)
            for short, metric in ATTENTION_METRICS.items():
                add(metric, (stats or {}).get(short))
    return out


def _scaled(value, unit: float) -> float | None:
    """A count in millions (or G): None for a missing one."""
    return None if _missing(value) else float(value) / unit
