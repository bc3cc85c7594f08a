"""One writer per run folder: an exclusive lock the training process holds for its whole life.

``<run>/run.lock`` is locked with ``fcntl.lockf`` (a POSIX record lock) and, while held, contains
who holds it (host, pid, SLURM job id, since when); ``<run>/lock.log`` gets one line per
acquisition and release, so the history of writers can be checked afterwards. A second trainer
waits up to ``wait_s`` (a requeued or retried job may start while the cancelled one is still
dying) and then refuses to start with a message naming the holder.

Why POSIX locks: they are what shared cluster file systems implement across nodes. An NFS client
forwards them to the server (NLM for NFSv3, part of the protocol in NFSv4), so two nodes exclude
each other; Linux emulates ``flock`` on NFS with the same POSIX locks, but not on every other
file system, so ``lockf`` is the portable choice. Lustre needs the ``flock`` mount option
(``localflock`` would make the lock node-local: two nodes could then both hold it). A lock is
released by the kernel when its process dies (SIGKILL included); when a whole node dies, an NFSv4
server drops its locks once the client's lease runs out (90 s by default), NFSv3 after the
client's statd recovery. Two properties of POSIX locks matter here: they belong to the process
(fork children such as DataLoader workers do not inherit them), and closing *any* descriptor of
the file in the holding process drops the lock, so the holder never opens ``run.lock`` a second
time (:func:`read_holder` is for other processes).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any, Callable, Iterator

LOCK_FILE, HISTORY_FILE = "run.lock", "lock.log"
#: temporary files only the lock holder writes (checkpoints, history, metrics): a holder removes
#: what a killed predecessor left behind
HOLDER_TEMPORARIES = (".checkpoint.pt.*", "..checkpoint.pt.*", ".config.yaml.*.tmp", ".history.csv.*.tmp",
                      ".metrics.json.*.tmp", ".weights.pt.*.tmp", ".attention_stage3.npz.*.tmp")
#: temporary files other processes (submit) write: removed only once clearly abandoned
SHARED_TEMPORARIES = (".run.yaml.*.tmp", ".job.json.*.tmp")
ABANDONED_AFTER_S = 600


class RunLockError(RuntimeError):
    """The run folder cannot be locked (held by another writer, or the file system refuses)."""


class RunLockedError(RunLockError):
    """Another process holds the run folder; ``holder`` is what it wrote into the lock file."""

    def __init__(self, message: str, holder: dict[str, Any] | None):
        super().__init__(message)
        self.holder = holder


def holder_info() -> dict[str, Any]:
    """Who this process is, as written into the lock file."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "job_id": os.environ.get("SLURM_JOB_ID"),
            "restart": os.environ.get("SLURM_RESTART_COUNT"), "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "time": time.time()}


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "an unknown process (the lock file names no holder yet)"
    job = f", SLURM job {holder['job_id']}" if holder.get("job_id") else ""
    return f"pid {holder.get('pid')} on host {holder.get('host')}{job}, since {holder.get('since')}"


def read_holder(folder: str | Path) -> dict[str, Any] | None:
    """The holder recorded in ``folder/run.lock`` (None if empty or unreadable). Not for the holder
    itself: opening and closing the file in the holding process would drop its lock."""
    try:
        text = (Path(folder) / LOCK_FILE).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def _try_lock(fd: int, path: Path) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise RunLockError(f"{path}: cannot take a lock ({err.strerror}); the run folder must be on a file "
                           f"system with POSIX locks (NFS with lockd, Lustre mounted with -o flock, GPFS)") from None


def is_locked(folder: str | Path) -> bool:
    """True while some other process holds ``folder``'s lock. Asks with F_GETLK, which takes no
    lock itself, so a trainer starting at that moment is never turned away by the question."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        # struct flock: l_type, l_whence (short), l_start, l_len (off_t), l_pid (pid_t) + padding;
        # a read lock over the whole file conflicts with the holder's exclusive lock
        query = struct.pack("hhqqi4x", fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        return struct.unpack("hhqqi4x", answer)[0] != fcntl.F_UNLCK
    except OSError as err:
        raise RunLockError(f"{path}: cannot ask for its lock ({err.strerror})") from None
    finally:
        os.close(fd)


def _history(folder: Path, event: str, info: dict[str, Any]) -> None:
    line = json.dumps({"event": event, **info}, sort_keys=True) + "\n"
    fd = os.open(folder / HISTORY_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class RunLock:
    """The exclusive lock of one run folder (:meth:`acquire`, :meth:`release`)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.fd: int | None = None
        self.info: dict[str, Any] = {}
        self.created = False

    def acquire(self, wait_s: float = 0.0, report: Callable[[str], None] | None = None) -> "RunLock":
        self.created = not self.folder.exists()
        deadline, said = time.monotonic() + wait_s, False
        while True:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                while not _try_lock(fd, self.path):
                    holder = read_holder(self.folder)
                    if time.monotonic() >= deadline:
                        raise RunLockedError(
                            f"{self.folder} is being written by {describe(holder)}; refusing to start a second "
                            f"writer (wait for it to end, or stop it: scancel / kill)", holder)
                    if report and not said:
                        report(f"{self.folder} is held by {describe(holder)}: waiting up to {wait_s:.0f} s")
                        said = True
                    time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
                if _same_file(fd, self.path):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # the holder we waited for removed the file (see release): lock the new one
        self.fd, self.info = fd, holder_info()
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(self.info, sort_keys=True) + "\n").encode(), 0)
        os.fsync(fd)
        _history(self.folder, "acquired", self.info)
        remove_temporaries(self.folder)
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if self.created and set(os.listdir(self.folder)) <= {LOCK_FILE, HISTORY_FILE}:
                # this writer made the folder and wrote nothing (e.g. its data was missing): leave no
                # trace; removed while still held, so a waiter notices (_same_file) and starts over
                for name in (HISTORY_FILE, LOCK_FILE):
                    (self.folder / name).unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # someone wrote into it meanwhile: keep it
                    self.folder.rmdir()
            else:
                _history(self.folder, "released", {**self.info, "time": time.time()})
                os.ftruncate(self.fd, 0)
        finally:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None


def _same_file(fd: int, path: Path) -> bool:
    """Is ``fd`` still the file at ``path`` (not removed or replaced while this process waited)?"""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def remove_temporaries(folder: Path, now: float | None = None) -> list[Path]:
    """Delete what killed writers left in ``folder`` (call only while holding its lock)."""
    now = time.time() if now is None else now
    removed = [p for pattern in HOLDER_TEMPORARIES for p in folder.glob(pattern)]
    removed += [p for pattern in SHARED_TEMPORARIES for p in folder.glob(pattern)
                if now - p.stat().st_mtime > ABANDONED_AFTER_S]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def wait_s_from_env() -> float:
    """How long a trainer waits for a folder held by another process: ``DLAREPRO_LOCK_WAIT_S``
    (set by the submitit job, where a retry may overlap a dying job), else 0."""
    try:
        return max(0.0, float(os.environ.get("DLAREPRO_LOCK_WAIT_S", "0")))
    except ValueError:
        return 0.0


@contextlib.contextmanager
def hold(folder: str | Path, world: Any, log: Callable[[str], None]) -> Iterator[RunLock | None]:
    """Rank 0 of the job holds ``folder``'s lock for the block; every rank raises
    :class:`RunLockedError` when it cannot be taken (the ranks agree, so none waits forever)."""
    from . import distributed as dist_

    lock, error = RunLock(folder), None
    if world.main:
        try:
            lock.acquire(wait_s_from_env(), log)
        except RunLockError as err:
            error = err
    if dist_.all_sum([1.0 if error else 0.0], world)[0]:
        raise error or RunLockedError(f"{folder}: rank 0 could not lock the run folder", None)
    try:
        yield lock if world.main else None
    finally:
        lock.release()
