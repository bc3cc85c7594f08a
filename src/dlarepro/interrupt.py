"""The exception a stop signal turns into (torch-free: a signal handler may raise it while torch
itself is still being imported)."""

from __future__ import annotations

import signal
from pathlib import Path


class Interrupted(BaseException):
    """A stop signal arrived; a checkpoint was written (``checkpoint``), or, for SIGTERM outside a
    training step, the run stopped at once and its last checkpoint stays (``checkpoint`` None).
    Run the same config again to resume. A BaseException, like KeyboardInterrupt: it may be raised
    from a signal handler anywhere (inside a library's ``except Exception``, which must not swallow it)."""

    def __init__(self, signum: int, checkpoint: Path | None):
        where = f"resume from {checkpoint}" if checkpoint else "stopped at once; the last checkpoint (if any) is kept"
        super().__init__(f"stopped by {signal.Signals(signum).name}; {where}")
        self.signum, self.checkpoint = signum, checkpoint
