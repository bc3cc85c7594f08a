"""Submit one run through an executor and wait for it (what a Snakemake job does).

* The run arrives as its record (identity and resolved config: what the workflow planned once)
  or, for a person at the command line, as a run id of the grid.
* The data, and for a detector its ImageNet backbone, are checked before anything is submitted;
  ``run.yaml`` is written into the run folder, then the job is submitted with the resolved config.
* The job id is recorded in ``<run>/job.json``; a restarted workflow re-attaches to a job that
  is still pending or running instead of submitting a duplicate.
* A failed job is reported with its error and the paths of its logs; the exit status is 1.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from . import atomic, layout
from .executors import ExecutorError, make_executor
from .identity import RunRecord, write_run_file


class SubmitError(RuntimeError):
    """Something to tell the user before or instead of a job (bad run id, missing data, ...)."""


def say(run_id: str, message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {run_id}: {message}", file=sys.stderr, flush=True)


def check_data(config: Mapping[str, Any], profile: str | None) -> None:
    """Fail before submission when the run's dataset is missing (the message says how to get it).

    Only the dataset's index file is checked here, without importing torch (one submission per
    run); the job itself validates every file when it loads them.
    """
    marker = Path(config["data_root"]) / layout.DATASET_MARKERS[config["dataset"]]
    if not marker.exists():
        prepare = f"`dla-repro grid prepare-data --profile {profile}`" if profile else "`dla-repro data ...`"
        raise SubmitError(
            f"{config['dataset']} data not found: {marker} does not exist. Prepare it with {prepare} "
            f"(generates synthetic data or downloads real CIFAR), or place the dataset in {config['data_root']} "
            f"as torchvision's download leaves it."
        )


def check_backbone(config: Mapping[str, Any]) -> None:
    """A detector starts from its finished ImageNet run: fail before submission when it is unusable."""
    if not config.get("pretrained"):
        return
    from .detection.config import PretrainedWeightsError, backbone_run

    try:
        backbone_run(config["pretrained"], config["arch"], config["depth"])
    except PretrainedWeightsError as err:
        raise SubmitError(f"{err}; Snakemake trains the ImageNet run first (it is an upstream job of this run)") from None


def submit_record(record: RunRecord, *, executor: str = "local", options: Mapping[str, Any] | None = None,
                  poll_seconds: float = 10.0) -> int:
    """Submit (or re-attach to) one planned run and wait for it; 0 when ``metrics.json`` exists."""
    from .jobs import TrainJob

    run_id, config = record.identity.run_id, record.config
    run_dir = Path(config["out_dir"])
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        say(run_id, "already finished")
        return 0
    try:
        backend = make_executor(executor, dict(options or {}))
    except ExecutorError as err:
        raise SubmitError(str(err)) from None
    check_data(config, record.identity.profile)
    check_backbone(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_file(run_dir, record)
    record_path, folder = run_dir / "job.json", run_dir / "submitit"

    previous = json.loads(record_path.read_text()) if record_path.exists() else {}
    submission = backend.attach(previous, folder) if previous else None
    if submission is not None:
        say(run_id, f"re-attaching to {submission.record['executor']} job {submission.record['job_id']} "
                    f"({submission.state}) instead of submitting again")
    else:
        submission = backend.submit(TrainJob(config), folder, run_id, config.get("threads"))
        if backend.name != "debug":
            atomic.write_json(record_path, submission.record)
            say(run_id, f"submitted as {backend.name} job {submission.record['job_id']} "
                        f"(logs: {submission.record.get('stderr')})")
    backend.wait(submission, lambda text: say(run_id, text), poll_seconds)
    return _finish(run_id, metrics, submission.record, submission.handle)


def _finish(run_id: str, metrics: Path, record: Mapping[str, Any], job) -> int:
    if metrics.exists():
        say(run_id, "finished")
        return 0
    reason = last_error(Path(record["stderr"])) if record.get("stderr") else None
    if job is not None and not reason:
        reason = f"job state {job.state}"
    say(run_id, f"FAILED: {reason or 'no metrics.json was written'}")
    say(run_id, f"job logs: {record.get('stderr', '?')} and {record.get('stdout', '?')}")
    return 1


ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Interrupted)\b.*")


def last_error(stderr: Path) -> str | None:
    """The last exception line of a job's stderr (what a user needs to see first)."""
    try:
        lines = stderr.read_text(errors="replace").splitlines()
    except OSError:
        return None
    errors = [line.strip() for line in lines if ERROR_LINE.match(line.strip())]
    return errors[-1] if errors else None


def executor_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The executor settings of a Snakemake config (params.yaml plus the profile and ``--config``)."""
    return {"executor": config.get("executor", "local"), "options": dict(config.get("executor_options") or {}),
            "options_by_family": dict(config.get("executor_options_by_family") or {}),
            "poll_seconds": float(config.get("poll_seconds", 10))}


def options_for_family(settings: Mapping[str, Any], family: str) -> dict[str, Any]:
    """The executor options with the family's own (``executor_options_by_family``) on top."""
    return {**settings["options"], **(settings.get("options_by_family", {}).get(family) or {})}
