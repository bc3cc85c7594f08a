"""Submit one run of the grid through submitit and wait for it (what a Snakemake job does).

* The run's config comes from the grid (``params.yaml``) and is validated, and its data checked,
  before anything is submitted.
* ``executor``: ``slurm`` (a cluster; partition, GPUs, CPUs, memory, time limit, account and extra
  sbatch options from the Snakemake profile), ``local`` (a subprocess on this machine) or
  ``debug`` (in this process).
* The job id is recorded in ``<run>/job.json``; a restarted workflow re-attaches to a job that
  is still pending or running instead of submitting a duplicate.
* A failed job is reported with its error and the paths of its logs; the exit status is 1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from . import grid as gridlib
from . import io

ALIVE_SLURM_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                      "COMPLETING", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED"}
DEFAULT_SLURM = {"timeout_min": 24 * 60, "gpus_per_node": 1, "cpus_per_task": 4, "mem_gb": 16,
                 "signal_delay_s": 120, "max_num_timeout": 10}


class SubmitError(RuntimeError):
    """Something to tell the user before or instead of a job (bad run id, missing data, ...)."""


def say(run_id: str, message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {run_id}: {message}", file=sys.stderr, flush=True)


def check_data(config: Mapping[str, Any], profile: str) -> None:
    """Fail before submission when the run's dataset is missing (the message says how to get it).

    Only the dataset's index file is checked here, without importing torch (one submission per
    run); the job itself validates every file when it loads them.
    """
    marker = Path(config["data_root"]) / gridlib.DATASET_MARKERS[config["dataset"]]
    if not marker.exists():
        raise SubmitError(
            f"{config['dataset']} data not found: {marker} does not exist. Prepare it with "
            f"`dla-repro grid prepare-data --profile {profile}` (generates synthetic data or downloads real "
            f"CIFAR), or place the dataset in {config['data_root']} as torchvision's download leaves it."
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


def make_executor(kind: str, folder: Path, run_id: str, slurm: Mapping[str, Any] | None, threads: int | None):
    import submitit

    opts = {**DEFAULT_SLURM, **(slurm or {})}
    if kind == "debug":
        return submitit.AutoExecutor(folder=folder, cluster="debug")
    if kind == "local":
        executor = submitit.AutoExecutor(folder=folder, cluster="local")
        executor.update_parameters(timeout_min=opts["timeout_min"], cpus_per_task=threads or 1, name=f"dla-{run_id}",
                                   tasks_per_node=int(opts.get("tasks_per_node") or 1))
        return executor
    if kind != "slurm":
        raise SubmitError(f"unknown executor {kind!r}; choose slurm, local or debug")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=opts["max_num_timeout"])
    params: dict[str, Any] = dict(
        name=f"dla-{run_id}", timeout_min=opts["timeout_min"], gpus_per_node=opts["gpus_per_node"],
        cpus_per_task=opts["cpus_per_task"], mem_gb=opts["mem_gb"], tasks_per_node=tasks_per_node(opts), nodes=1,
        slurm_signal_delay_s=opts["signal_delay_s"],
    )
    if opts.get("partition"):
        params["slurm_partition"] = opts["partition"]
    if opts.get("account"):
        params["slurm_account"] = opts["account"]
    if opts.get("additional_parameters"):
        params["slurm_additional_parameters"] = dict(opts["additional_parameters"])
    executor.update_parameters(**params)
    return executor


def tasks_per_node(opts: Mapping[str, Any]) -> int:
    """One process per GPU (torch DDP) unless ``tasks_per_node`` says otherwise (e.g. CPU-only tests)."""
    return int(opts.get("tasks_per_node") or max(1, int(opts.get("gpus_per_node") or 0)))


def slurm_state(job_id: str) -> str | None:
    """The job's state from sacct (None if SLURM does not know it)."""
    try:
        out = subprocess.run(["sacct", "-j", str(job_id), "-X", "-n", "-P", "-o", "State"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    states = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    return states[-1] if states else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _attach(record: dict[str, Any], folder: Path):
    """A submitit job handle for a recorded job that is still alive, else None."""
    import submitit

    if record.get("executor") == "slurm":
        state = slurm_state(record["job_id"])
        if state in ALIVE_SLURM_STATES:
            return submitit.SlurmJob(folder=folder, job_id=str(record["job_id"])), state
    elif record.get("executor") == "local" and record.get("pid") and pid_alive(int(record["pid"])):
        return None, "RUNNING (local pid %s)" % record["pid"]
    return None, None


def submit_run(grid: Mapping[str, Any], run_id: str, profile: str | None = None, *, workdir: str | Path = ".",
               executor: str = "local", slurm: Mapping[str, Any] | None = None, poll_seconds: float = 10.0) -> int:
    """Submit (or re-attach to) one run and wait for it; 0 when ``metrics.json`` exists."""
    from .config import ConfigError, resolve_any

    try:
        config = gridlib.run_config(grid, run_id, profile, workdir)
        resolved = resolve_any(config)
    except (gridlib.GridError, ConfigError) as err:
        raise SubmitError(str(err)) from None
    run_dir = Path(config["out_dir"])
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        say(run_id, "already finished")
        return 0
    check_data(config, gridlib.profile_of(grid, profile)[0])
    check_backbone(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    record_path, folder = run_dir / "job.json", run_dir / "submitit"

    if executor == "debug":
        from .jobs import TrainJob

        TrainJob(config)()
        return 0

    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    job, alive = _attach(record, folder) if record else (None, None)
    if alive and job is None:  # a local job of a previous workflow, still running
        say(run_id, f"re-attaching to {alive}")
        while pid_alive(int(record["pid"])):
            time.sleep(poll_seconds)
        return _finish(run_id, metrics, record, None)
    if job is not None:
        say(run_id, f"re-attaching to SLURM job {record['job_id']} ({alive}) instead of submitting again")
    else:
        from .jobs import TrainJob

        job = make_executor(executor, folder, run_id, slurm, resolved.get("threads")).submit(TrainJob(config))
        record = {"executor": executor, "job_id": str(job.job_id), "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  "submitit_folder": str(folder), "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)}
        if executor == "local":
            record["pid"] = int(job.job_id)
        io.write_json(record_path, record)
        say(run_id, f"submitted as {executor} job {job.job_id} (logs: {job.paths.stderr})")

    last = None
    while not job.done(force_check=True):
        state = job.state
        if state != last:
            say(run_id, f"job {job.job_id}: {state}")
            last = state
        time.sleep(poll_seconds)
    return _finish(run_id, metrics, record, job)


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
    """The executor options of a Snakemake config (params.yaml plus ``--config``/profile values)."""
    slurm = {k[len("slurm_"):]: v for k, v in config.items() if k.startswith("slurm_") and k != "slurm_by_family"}
    return {"executor": config.get("executor", "local"), "slurm": slurm,
            "slurm_by_family": dict(config.get("slurm_by_family") or {}),
            "poll_seconds": float(config.get("poll_seconds", 10))}


def slurm_for_family(settings: Mapping[str, Any], family: str) -> dict[str, Any]:
    """The flat SLURM options with the family's own (``slurm_by_family``) on top."""
    merged = {**settings["slurm"], **(settings.get("slurm_by_family", {}).get(family) or {})}
    return {k: _number(v) for k, v in merged.items()}


def _number(value: Any) -> Any:
    """Snakemake's ``--config key={a: 1}`` hands nested values over as strings."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value
