"""The callable submitit runs on a node: one training run, requeued on timeout or preemption.

Kept free of heavy imports at module level: submitit pickles an instance of ``TrainJob`` in the
submitting process and unpickles it on the node, where ``__call__`` imports torch.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import submitit

from .interrupt import Interrupted


class TrainJob(submitit.helpers.Checkpointable):
    """Train ``config`` (a resolved run config of any kind, :mod:`dlarepro.kinds`); resumes from the
    run folder's checkpoint.

    The run (:mod:`dlarepro.runbase`) turns SLURM's warning signal (USR2, sent ``signal_delay_s`` before the time
    limit) into a checkpoint at the next batch boundary. Once that checkpoint is on disk the job
    hands the signal back to submitit, which requeues it through ``checkpoint()``; the requeued
    job starts this same callable, which resumes where the checkpoint left off.
    """

    REQUEUE_GRACE_S = 180
    #: how long a job waits for its run folder while another process still holds it (a retry
    #: submitted while a cancelled job is still being killed: SLURM's KillWait is 30 s by default)
    LOCK_WAIT_S = 120

    def __init__(self, config: dict[str, Any]):
        self.config = config

    def __call__(self) -> dict[str, Any]:
        # submitit ignores SIGTERM in a job ("Bypassing signal SIGTERM"), so a `scancel` landing
        # during start-up (imports, data loading) would be lost and the job would run on until
        # SLURM's SIGKILL. Until the training loop installs its own handler, SIGTERM stops at once.
        signal.signal(signal.SIGTERM, _stop_now)
        os.environ.setdefault("DLAREPRO_LOCK_WAIT_S", str(self.LOCK_WAIT_S))
        from . import hostmemory, kinds

        hostmemory.keep_freed_memory()  # a training process: no page faults for every step's maps

        try:
            return kinds.train(self.config, progress=False)
        except Interrupted as stop:
            handler = signal.getsignal(stop.signum)  # submitit's, restored by train()
            if stop.signum == signal.SIGUSR2 and callable(handler):
                handler(stop.signum, None)  # rank 0: checkpoint() + scontrol requeue + exit
                if submitit.JobEnvironment().global_rank != 0:
                    # Other tasks of a multi-GPU job must not end the job step with an error before
                    # rank 0 has requeued it; the requeue stops them.
                    time.sleep(self.REQUEUE_GRACE_S)
            raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        # The training state is already in the run folder; the requeued job only needs the config.
        return submitit.helpers.DelayedSubmission(TrainJob(self.config))


def _stop_now(signum: int, frame: Any) -> None:
    raise Interrupted(signum, None)
