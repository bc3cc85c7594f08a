"""The local executor: each job a submitit subprocess on this machine."""

from __future__ import annotations

import os
import time

from .base import Executor, Option, Submission, follow, timestamp


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalExecutor(Executor):
    name = "local"
    description = "a subprocess on this machine (submitit's local executor)"
    options = {
        "timeout_min": Option(int, "an integer >= 1 (minutes)", 24 * 60, lambda v: v >= 1),
        "tasks_per_node": Option(int, "an integer >= 1 (processes; 2 runs a DDP job on the CPU)", 1, lambda v: v >= 1),
    }

    def submit(self, job, folder, run_id, threads, report=None) -> Submission:
        import submitit

        executor = submitit.AutoExecutor(folder=folder, cluster="local")
        executor.update_parameters(timeout_min=self.settings["timeout_min"], cpus_per_task=threads or 1,
                                   name=f"dla-{run_id}", tasks_per_node=self.settings["tasks_per_node"])
        handle = executor.submit(job)
        record = {"executor": self.name, "job_id": str(handle.job_id), "pid": int(handle.job_id),
                  "submitted": timestamp(), "submitit_folder": str(folder),
                  "stdout": str(handle.paths.stdout), "stderr": str(handle.paths.stderr)}
        return Submission(record, handle)

    def attach(self, record, folder, poll_seconds=10.0, report=None) -> Submission | None:
        pid = record.get("pid")
        if record.get("executor") == self.name and pid and pid_alive(int(pid)):
            return Submission(dict(record), None, f"RUNNING (local pid {pid})")
        return None

    def wait(self, submission, report, poll_seconds) -> None:
        if submission.handle is None:  # a process of an earlier workflow: only its pid is known
            while pid_alive(int(submission.record["pid"])):
                time.sleep(poll_seconds)
            return
        submission.state = follow(submission.handle, report, poll_seconds)
