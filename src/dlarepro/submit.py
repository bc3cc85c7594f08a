"""Submit one run through an executor and wait for it (what a Snakemake job does).

* The run arrives as its record (identity and resolved config: what the workflow planned once)
  or, for a person at the command line, as a run id of the grid.
* The data, and for a detector its ImageNet backbone, are checked before anything is submitted;
  ``run.yaml`` is written into the run folder, then the job is submitted with the resolved config.
* The job id is recorded in ``<run>/job.json``; a restarted workflow re-attaches to a job that
  is still pending or running instead of submitting a duplicate, waits while SLURM cannot tell
  (never resubmits on a guess), and never submits while another process holds the run folder.
* A finished run is never trained again; a folder trained with another config or on other data
  (:mod:`dlarepro.freshness`) is moved to ``results/<profile>/superseded/`` first.
* A failed job is reported with its error and the paths of its logs; the exit status is 1.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from . import atomic, freshness, layout, provenance, runlock
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


LOCK_WAIT_S = 300  # how long a new submission waits for a run folder another process still writes


def _fresh_or_set_aside(record: RunRecord, backend, run_dir: Path, poll_seconds: float) -> bool:
    """True when the folder holds this run finished and still as planned; a stale folder (other
    config, or data changed since) is moved aside so the run trains again (:mod:`dlarepro.freshness`)."""
    config = record.config
    finished = (run_dir / "metrics.json").exists()
    data = provenance.fingerprint(config["dataset"], config["data_root"]) if finished else None
    state = freshness.check(run_dir, config, data)
    if not state.stale:
        return state.finished
    reasons = "; ".join(state.reasons)
    run_id = record.identity.run_id
    if runlock.is_locked(run_dir):
        raise SubmitError(f"{run_id} is stale ({reasons}) but {runlock.describe(runlock.read_holder(run_dir))} is "
                          f"still training it: stop that job, then run the workflow again")
    previous = _job_record(run_dir)
    if previous and backend.attach(previous, run_dir / "submitit", poll_seconds) is not None:
        raise SubmitError(f"{run_id} is stale ({reasons}) but job {previous['job_id']} of the old configuration is "
                          f"still queued or running: cancel it, then run the workflow again")
    target = freshness.set_aside(run_dir, freshness.superseded_root(run_dir), state.reasons)
    say(run_id, f"stale: {reasons}; the old folder is kept at {target}; training it again")
    return False


def _job_record(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "job.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait_until_free(run_id: str, run_dir: Path) -> None:
    """Never start a second writer: a cancelled job may still be dying while SLURM says CANCELLED."""
    deadline, said = time.monotonic() + LOCK_WAIT_S, False
    while runlock.is_locked(run_dir):
        holder = runlock.describe(runlock.read_holder(run_dir))
        if time.monotonic() > deadline:
            raise SubmitError(f"{run_dir} is still being written by {holder} after {LOCK_WAIT_S} s; not submitting "
                              f"a second job: stop that process (or job), then run the workflow again")
        if not said:
            say(run_id, f"waiting for {holder} to release {run_dir} before submitting")
            said = True
        time.sleep(1.0)


def write_done(done: Path, record: RunRecord) -> None:
    """The workflow's stamp for a finished run (the run folder itself is never a Snakemake output,
    so that no Snakemake command deletes a finished run)."""
    metrics = json.loads((Path(record.config["out_dir"]) / "metrics.json").read_text())
    atomic.write_json(done, {"run_id": record.identity.run_id, "config_digest": metrics.get("config_digest"),
                             "data": (metrics.get("data") or {}).get("fingerprint"),
                             "metrics": str(Path(record.config["out_dir"]) / "metrics.json")})


def submit_record(record: RunRecord, *, executor: str = "local", options: Mapping[str, Any] | None = None,
                  poll_seconds: float = 10.0, done: Path | None = None) -> int:
    """Submit (or re-attach to) one planned run and wait for it; 0 when ``metrics.json`` exists
    (then ``done``, the workflow's stamp, is written)."""
    from .jobs import TrainJob

    run_id, config = record.identity.run_id, record.config
    run_dir = Path(config["out_dir"])

    def report(text: str) -> None:
        say(run_id, text)

    try:
        backend = make_executor(executor, dict(options or {}))
        if _fresh_or_set_aside(record, backend, run_dir, poll_seconds):
            say(run_id, "already finished")
            if done is not None:
                write_done(done, record)
            return 0
        check_data(config, record.identity.profile)
        check_backbone(config)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_file(run_dir, record)
        record_path, folder = run_dir / "job.json", run_dir / "submitit"
        previous = _job_record(run_dir)
        submission = backend.attach(previous, folder, poll_seconds, report) if previous else None
        if submission is not None:
            say(run_id, f"re-attaching to {submission.record['executor']} job {submission.record['job_id']} "
                        f"({submission.state}) instead of submitting again")
        else:
            _wait_until_free(run_id, run_dir)
            submission = backend.submit(TrainJob(config), folder, run_id, config.get("threads"), report)
            if backend.name != "debug":
                earlier = previous.get("earlier", []) + ([previous["job_id"]] if previous.get("job_id") else [])
                atomic.write_json(record_path, {**submission.record, "earlier": earlier})
                say(run_id, f"submitted as {backend.name} job {submission.record['job_id']} "
                            f"(logs: {submission.record.get('stderr')})")
        backend.wait(submission, report, poll_seconds)
    except ExecutorError as err:
        raise SubmitError(str(err)) from None
    status = _finish(run_id, run_dir / "metrics.json", submission.record, submission.state)
    if status == 0 and done is not None:
        write_done(done, record)
    return status


def _finish(run_id: str, metrics: Path, record: Mapping[str, Any], state: str | None) -> int:
    if metrics.exists():
        say(run_id, "finished")
        return 0
    reason = last_error(Path(record["stderr"])) if record.get("stderr") else None
    if state and not reason:
        reason = f"job state {state}"
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


#: the workflow's executor settings (JSON of :func:`executor_settings`): the Snakefile exports them
#: to its jobs instead of passing them as rule params, so that changing an option (a partition, the
#: poll interval) does not count as a change of every finished run
WORKFLOW_EXECUTOR = "DLAREPRO_EXECUTOR"


def executor_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The executor settings of a Snakemake config (params.yaml plus the profile and ``--config``)."""
    return {"executor": config.get("executor", "local"), "options": dict(config.get("executor_options") or {}),
            "options_by_family": dict(config.get("executor_options_by_family") or {}),
            "poll_seconds": float(config.get("poll_seconds", 10))}


def options_for_family(settings: Mapping[str, Any], family: str) -> dict[str, Any]:
    """The executor options with the family's own (``executor_options_by_family``) on top."""
    return {**settings["options"], **(settings.get("options_by_family", {}).get(family) or {})}
