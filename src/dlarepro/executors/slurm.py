"""The SLURM executor: an sbatch job through submitit, requeued on a time limit or preemption.

ImageNet and COCO runs take one task per GPU (torch DDP) on one node unless ``tasks_per_node``
says otherwise (CPU-only tests). A restarted workflow re-attaches to a job SLURM still lists as
pending or running instead of submitting a duplicate.
"""

from __future__ import annotations

import subprocess

from .base import Executor, Option, Submission, follow, timestamp

ALIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED"}


def slurm_state(job_id: str) -> str | None:
    """The job's state from sacct (None if SLURM does not know it)."""
    try:
        out = subprocess.run(["sacct", "-j", str(job_id), "-X", "-n", "-P", "-o", "State"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    states = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    return states[-1] if states else None


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
        "additional_parameters": Option(dict, "a mapping of extra sbatch options, e.g. {constraint: a100}", None),
    }

    @property
    def tasks_per_node(self) -> int:
        """One process per GPU (torch DDP) unless ``tasks_per_node`` says otherwise."""
        s = self.settings
        return int(s["tasks_per_node"] or max(1, int(s["gpus_per_node"] or 0)))

    def submit(self, job, folder, run_id, threads) -> Submission:
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
        handle = executor.submit(job)
        record = {"executor": self.name, "job_id": str(handle.job_id), "submitted": timestamp(),
                  "submitit_folder": str(folder), "stdout": str(handle.paths.stdout),
                  "stderr": str(handle.paths.stderr)}
        return Submission(record, handle)

    def attach(self, record, folder) -> Submission | None:
        import submitit

        if record.get("executor") != self.name:
            return None
        state = slurm_state(record["job_id"])
        if state in ALIVE_STATES:
            return Submission(dict(record), submitit.SlurmJob(folder=folder, job_id=str(record["job_id"])), state)
        return None

    def wait(self, submission, report, poll_seconds) -> None:
        follow(submission.handle, report, poll_seconds)
