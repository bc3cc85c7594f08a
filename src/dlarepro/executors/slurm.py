"""The SLURM executor: an sbatch job through submitit, requeued on a time limit or preemption.

ImageNet and COCO runs take one task per GPU (torch DDP) on one node unless ``tasks_per_node``
says otherwise (CPU-only tests). A restarted workflow re-attaches to a job SLURM still lists as
pending or running instead of submitting a duplicate; a job whose state cannot be learnt
(accounting and controller unreachable) is waited for, never resubmitted
(:mod:`dlarepro.executors.slurmqueue`). A transient ``sbatch`` failure is retried with backoff
for ``submit_retry_s`` and leaves no submission files behind.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from .base import Executor, ExecutorError, Option, Submission, timestamp
from .slurmqueue import ALIVE_STATES, ENDED, UNKNOWN, SharedStates, alive, runs_folder, transient

__all__ = ["ALIVE_STATES", "SlurmExecutor"]
#: sbatch option names as additional_parameters keys (they become ``#SBATCH --<key>=<value>`` lines)
SBATCH_KEY = re.compile(r"^[a-z][a-z0-9_-]*$")


def _tell(report, text: str) -> None:
    if report is not None:
        report(text)


class SlurmExecutor(Executor):
    name = "slurm"
    description = "an sbatch job on a SLURM cluster (submitit), requeued after preemption or a time limit"
    options = {
        "partition": Option(str, "a partition name", None),
        "account": Option(str, "an account name", None),
        "gpus_per_node": Option(int, "an integer >= 0", 1, lambda v: v >= 0),
        "cpus_per_task": Option(int, "an integer >= 1", 4, lambda v: v >= 1),
        "mem_gb": Option(float, "a number > 0 (GB per node)", 16.0, lambda v: v > 0),
        "timeout_min": Option(int, "an integer >= 1 (minutes)", 24 * 60, lambda v: v >= 1),
        "signal_delay_s": Option(int, "an integer >= 1 (seconds of warning before the time limit)", 120,
                                 lambda v: v >= 1),
        "max_num_timeout": Option(int, "an integer >= 0 (requeues after a time limit or preemption)", 10,
                                  lambda v: v >= 0),
        "tasks_per_node": Option(int, "an integer >= 1 (default: one per GPU)", None, lambda v: v >= 1),
        "additional_parameters": Option(dict, "a mapping of extra sbatch options (names of lower-case letters, "
                                              "digits, - and _), e.g. {constraint: a100}", None,
                                        lambda v: all(SBATCH_KEY.match(k) for k in v)),
        "submit_retry_s": Option(float, "a number >= 0 (seconds to retry sbatch after a transient SLURM error)",
                                 900.0, lambda v: v >= 0),
        "state_unknown_s": Option(float, "a number > 0 (seconds to wait while SLURM cannot say whether a job "
                                         "runs before giving up, never resubmitting)", 6 * 3600.0, lambda v: v > 0),
    }

    @property
    def tasks_per_node(self) -> int:
        """One process per GPU (torch DDP) unless ``tasks_per_node`` says otherwise."""
        s = self.settings
        return int(s["tasks_per_node"] or max(1, int(s["gpus_per_node"] or 0)))

    def _executor(self, folder: Path, run_id: str):
        import submitit

        s = self.settings
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=s["max_num_timeout"])
        params = dict(name=f"dla-{run_id}", timeout_min=s["timeout_min"], gpus_per_node=s["gpus_per_node"],
                      cpus_per_task=s["cpus_per_task"], mem_gb=s["mem_gb"], tasks_per_node=self.tasks_per_node,
                      nodes=1, slurm_signal_delay_s=s["signal_delay_s"])
        if s["partition"]:
            params["slurm_partition"] = s["partition"]
        if s["account"]:
            params["slurm_account"] = s["account"]
        if s["additional_parameters"]:
            params["slurm_additional_parameters"] = dict(s["additional_parameters"])
        executor.update_parameters(**params)
        return executor

    def submit(self, job, folder, run_id, threads, report=None) -> Submission:
        from submitit.core.utils import FailedJobError

        executor = self._executor(Path(folder), run_id)
        deadline, delay, attempt = time.monotonic() + self.settings["submit_retry_s"], 2.0, 0
        while True:
            attempt += 1
            before = set(Path(folder).iterdir()) if Path(folder).is_dir() else set()
            try:
                handle = executor.submit(job)
                break
            except FailedJobError as err:
                # submitit leaves the pickled job and the sbatch script behind: remove this attempt's
                # files (a job SLURM accepted despite the error then finds no pickle and fails at once)
                for path in set(Path(folder).iterdir()) - before if Path(folder).is_dir() else ():
                    path.unlink(missing_ok=True)
                lines = str(err).strip().splitlines()
                message = lines[-1] if lines else "sbatch failed"
                if not transient(message):
                    raise ExecutorError(f"sbatch failed: {message}") from None
                if time.monotonic() + delay > deadline:
                    raise ExecutorError(f"sbatch failed {attempt} time(s) over {self.settings['submit_retry_s']:.0f} s "
                                        f"(submit_retry_s), last: {message}") from None
                _tell(report, f"sbatch: {message}; retrying in {delay:.0f} s (attempt {attempt})")
                time.sleep(delay)
                delay = min(delay * 2, 60.0)
        record = {"executor": self.name, "job_id": str(handle.job_id), "submitted": timestamp(),
                  "submitit_folder": str(folder), "stdout": str(handle.paths.stdout),
                  "stderr": str(handle.paths.stderr), "tasks": self.tasks_per_node,
                  "gpus": int(self.settings["gpus_per_node"] or 0)}
        return Submission(record, handle, "PENDING")

    def _shared(self, folder: Path, poll_seconds: float) -> SharedStates:
        # submitit's folder is <runs>/<run>/submitit: the shared state file sits in <runs>
        return SharedStates(runs_folder(Path(folder).parent), poll_seconds)

    def known_state(self, job_id: str, shared: SharedStates, poll_seconds: float, report=None) -> str:
        """The job's state once SLURM has told it (waits while it is unknown, up to state_unknown_s)."""
        started, said = time.monotonic(), False
        while True:
            state = shared.states([job_id])[job_id]
            if state is not None and state != UNKNOWN:
                return state
            if state == UNKNOWN and not said:
                _tell(report, f"job {job_id}: SLURM cannot say whether it runs ({shared.last_error()}); waiting, "
                               f"not submitting it again")
                said = True
            if time.monotonic() - started > self.settings["state_unknown_s"]:
                raise ExecutorError(f"SLURM could not say for {self.settings['state_unknown_s']:.0f} s whether job "
                                    f"{job_id} is still running ({shared.last_error()}); not submitting a duplicate: "
                                    f"check `squeue -j {job_id}` and run the workflow again")
            time.sleep(poll_seconds)

    def attach(self, record, folder, poll_seconds: float = 10.0, report=None) -> Submission | None:
        if record.get("executor") != self.name:
            return None
        shared = self._shared(folder, poll_seconds)
        state = self.known_state(str(record["job_id"]), shared, poll_seconds, report)
        return Submission(dict(record), None, state) if state in ALIVE_STATES else None

    def wait(self, submission, report, poll_seconds) -> None:
        job_id = str(submission.record["job_id"])
        shared = self._shared(Path(submission.record["submitit_folder"]), poll_seconds)
        last = None
        while alive(submission.state):
            state = shared.states([job_id])[job_id]
            if state is None:  # the shared query has not covered this job yet
                time.sleep(poll_seconds)
                continue
            if state == UNKNOWN:
                state = self.known_state(job_id, shared, poll_seconds, report)
            if state != last:
                report(f"job {job_id}: {state}" + (" (no longer listed by the controller)" if state == ENDED else ""))
                last = state
            submission.state = state
            if alive(state):
                time.sleep(poll_seconds)
