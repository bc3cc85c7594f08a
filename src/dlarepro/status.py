"""``dla-repro grid status``: where a long grid stands, run by run, without disturbing it.

Every planned run is one of: ``finished``; ``stale`` (finished or started under another config or
on other data: it will be set aside and trained again, :mod:`dlarepro.freshness`); ``running``
(epoch k of E, an ETA from its own epoch times); ``pending`` (queued in SLURM); ``failed`` (its job
ended without ``metrics.json``: the last error line and the log); ``unknown`` (SLURM cannot say);
``interrupted`` (a checkpoint, no job: the next workflow resumes it); ``not started``.

It reads only small files, takes no lock (a trainer starting meanwhile is never turned away) and
asks SLURM through the workflow's shared state file (:mod:`dlarepro.executors.slurmqueue`): while
a workflow is running, its last answer is reused; otherwise one query covers every job.
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import freshness, provenance, runlock
from .identity import RunRecord

ORDER = ("finished", "running", "pending", "failed", "stale", "unknown", "interrupted", "not started")


@dataclass
class RunStatus:
    run_id: str
    status: str
    detail: str = ""
    experiments: list[str] = field(default_factory=list)
    hours: float = 0.0          # device-hours spent (wall time x processes), finished or so far
    gpu_hours: float = 0.0      # the same, counted only for runs on GPUs
    remaining_hours: float | None = None  # estimate (None: nothing to estimate from)
    log: str | None = None


def _history(folder: Path) -> list[dict[str, str]]:
    try:
        with open(folder / "history.csv", newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError:
        return []


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _job_states(records: dict[str, dict[str, Any]], runs_dir: Path, poll_seconds: float) -> dict[str, str | None]:
    """The SLURM state of every recorded slurm job (one shared query), local jobs by their pid."""
    from .executors.local import pid_alive
    from .executors.slurmqueue import SharedStates

    slurm = [str(r["job_id"]) for r in records.values() if r.get("executor") == "slurm"]
    states: dict[str, str | None] = {}
    if slurm:
        states.update(SharedStates(runs_dir, poll_seconds).states(slurm, refresh_missing=True))
    for r in records.values():
        if r.get("executor") == "local" and r.get("pid"):
            states[str(r["job_id"])] = "RUNNING" if pid_alive(int(r["pid"])) else "ENDED"
    return states


def classify(record: RunRecord, job: Mapping[str, Any], state: str | None, data: str | None) -> RunStatus:
    """The status of one planned run from its folder, its job record and its job's state."""
    from .executors.slurmqueue import ALIVE_STATES, UNKNOWN
    from .submit import last_error

    config, folder = record.config, Path(record.config["out_dir"])
    out = RunStatus(record.identity.run_id, "not started", experiments=list(record.identity.experiments))
    fresh = freshness.check(folder, config, data)
    metrics = _json(folder / "metrics.json")
    history = _history(folder)
    gpus = str(metrics["device"]).startswith("cuda") if metrics else bool(job.get("gpus"))
    processes = int(metrics.get("world_size") or job.get("tasks") or 1)
    seconds = float(metrics.get("wall_seconds") or sum(float(r.get("epoch_seconds") or 0) for r in history))
    out.hours = seconds * processes / 3600
    out.gpu_hours = out.hours if gpus else 0.0
    epochs = int(config.get("epochs") or 0)
    times = [float(r["epoch_seconds"]) for r in history if r.get("epoch_seconds")]
    if fresh.stale:
        out.status, out.detail = "stale", "; ".join(fresh.reasons)
    elif fresh.finished:
        out.status = "finished"
        out.remaining_hours = 0.0
        top1 = metrics.get("final_top1", metrics.get("bbox_ap"))
        out.detail = f"{metrics.get('epochs')} epochs" + (f", final {top1:.2f}" if isinstance(top1, float) else "")
    elif runlock.is_locked(folder) or state in ("RUNNING", "COMPLETING"):
        out.status = "running"
        left = max(epochs - len(history), 0)
        eta = statistics.median(times) * left if times else None
        out.detail = f"epoch {min(len(history) + 1, epochs)} of {epochs}" + (
            f", ETA {eta / 3600:.2f} h from its own epoch times" if eta is not None else ", ETA after its first epoch")
        out.remaining_hours = None if eta is None else eta * processes / 3600
    elif state in ALIVE_STATES:
        out.status, out.detail = "pending", f"SLURM job {job.get('job_id')}: {state}"
    elif state == UNKNOWN:
        out.status, out.detail = "unknown", f"SLURM cannot say what job {job.get('job_id')} is doing"
    elif job:
        out.status, out.log = "failed", job.get("stderr")
        out.detail = last_error(Path(job["stderr"])) if job.get("stderr") else None
        out.detail = out.detail or (f"job {job.get('job_id')} ended ({state or 'state unknown'}) without metrics.json")
    elif history or (folder / "checkpoint.pt").exists():
        out.status, out.detail = "interrupted", f"{len(history)} of {epochs} epochs done; resumes from its checkpoint"
    if out.status != "running" and out.status != "finished" and times:
        out.remaining_hours = statistics.median(times) * max(epochs - len(history), 0) * processes / 3600
    return out


def grid_status(plan: Mapping[str, RunRecord], poll_seconds: float = 10.0) -> list[RunStatus]:
    """The status of every planned run (``plan``: :func:`dlarepro.grid.plan`)."""
    if not plan:
        return []
    jobs = {rid: _json(Path(r.config["out_dir"]) / "job.json") for rid, r in plan.items()}
    runs_dir = Path(next(iter(plan.values())).config["out_dir"]).parent
    states = _job_states({k: v for k, v in jobs.items() if v.get("job_id")}, runs_dir, poll_seconds)
    fingerprints: dict[tuple[str, str], str | None] = {}
    out = []
    for run_id, record in plan.items():
        c = record.config
        key = (c["dataset"], c["data_root"])
        if (Path(c["out_dir"]) / "metrics.json").exists() and key not in fingerprints:
            fingerprints[key] = provenance.fingerprint(*key)  # once per dataset, only when needed
        job = jobs[run_id]
        out.append(classify(record, job, states.get(str(job.get("job_id"))), fingerprints.get(key)))
    _estimate_remaining(out, plan)
    return out


def _estimate_remaining(statuses: list[RunStatus], plan: Mapping[str, RunRecord]) -> None:
    """Runs with nothing of their own to go by: the median cost of finished runs of the same
    config (other seeds), else of the same dataset and depth."""
    done: dict[tuple, list[float]] = {}
    for s in statuses:
        if s.status == "finished" and s.hours:
            i = plan[s.run_id].identity
            done.setdefault(("config", i.config_id), []).append(s.hours)
            done.setdefault(("shape", i.dataset, i.depth, i.detector), []).append(s.hours)
    for s in statuses:
        if s.remaining_hours is None and s.status != "finished":
            i = plan[s.run_id].identity
            for key in (("config", i.config_id), ("shape", i.dataset, i.depth, i.detector)):
                if done.get(key):
                    s.remaining_hours = statistics.median(done[key])
                    break


def render(statuses: list[RunStatus], experiments: list[str]) -> str:
    """Every run with its status, then counts per table, hours spent and an estimate of what remains."""
    width = max((len(s.run_id) for s in statuses), default=10)
    lines = [f"{s.run_id:<{width}}  {s.status:<11}  {s.detail or ''}" + (f"  (log: {s.log})" if s.log else "")
             for s in statuses]
    lines += ["", f"{'table':<10} " + " ".join(f"{name:>11}" for name in ORDER)]
    for experiment in experiments + ["all"]:
        mine = [s for s in statuses if experiment == "all" or experiment in s.experiments]
        if mine:
            lines.append(f"{experiment:<10} " + " ".join(f"{sum(s.status == n for s in mine):>11}" for n in ORDER))
    spent = sum(s.hours for s in statuses)
    gpu = sum(s.gpu_hours for s in statuses)
    left = [s for s in statuses if s.status != "finished"]
    known = sum(s.remaining_hours or 0.0 for s in left)
    unknown = sum(s.remaining_hours is None for s in left)
    lines += ["", f"GPU-hours spent: {gpu:.2f} (device-hours of all runs, CPU included: {spent:.2f})",
              f"estimated device-hours remaining: {known:.2f} for {len(left) - unknown} of {len(left)} unfinished runs"
              + (f"; {unknown} with nothing to estimate from yet" if unknown else "")]
    return "\n".join(lines)


def as_json(statuses: list[RunStatus]) -> str:
    return json.dumps([asdict(s) for s in statuses], indent=1, sort_keys=True)
