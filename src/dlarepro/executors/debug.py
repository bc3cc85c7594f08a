"""The debug executor: the job runs in the calling process (tracebacks stay visible)."""

from __future__ import annotations

from .base import Executor, Submission


class DebugExecutor(Executor):
    name = "debug"
    description = "run the job in this process (no submission; for debugging)"
    options = {}

    def submit(self, job, folder, run_id, threads, report=None) -> Submission:
        job()
        return Submission({"executor": self.name, "job_id": "in-process"})

    def wait(self, submission, report, poll_seconds) -> None:
        return None
