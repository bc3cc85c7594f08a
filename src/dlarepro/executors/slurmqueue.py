"""What SLURM says about jobs: one query for every waiting process of a workflow, never a guess.

* **Unknown is not dead.** ``sacct`` fails while accounting (slurmdbd) is down, and lags behind
  after it comes back; ``squeue`` (the controller) is asked for the jobs ``sacct`` cannot answer
  for. When both fail the state is :data:`UNKNOWN`: callers wait and retry, they never take the
  job for dead and submit a duplicate. Queries that fail back off (interval × 2^failures, at most
  :data:`MAX_BACKOFF_S`).
* **One query per interval for the whole workflow.** Every ``dla-repro submit`` of a workflow
  waits on its job; with hundreds in flight, each polling ``sacct`` would load the controller.
  They share ``.slurm-state.json`` next to the run folders, under a lock: whoever finds it older
  than the poll interval queries SLURM for every job any of them follows and writes the answer;
  the others read it. A job no process asked about for a while is dropped from the query.
* **Transient errors** (``Unable to contact slurm controller``, socket time-outs, ...) are told
  apart from real ones (:func:`transient`), so ``sbatch`` is retried only when that can help.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .. import atomic

ALIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED"}
#: neither sacct nor squeue answered: the job may well be running
UNKNOWN = "UNKNOWN"
#: squeue answered and does not list the job: it ended (its final state is only in accounting)
ENDED = "ENDED"
STATE_FILE, LOCK_FILE = ".slurm-state.json", ".slurm-state.lock"
MAX_BACKOFF_S = 300.0
COMMAND_TIMEOUT_S = 60
TRANSIENT = re.compile(r"unable to contact slurm controller|socket timed out|temporarily unable|resource temporarily "
                       r"unavailable|zero bytes were transmitted|connection refused|connection reset|transport "
                       r"endpoint|communication connection failure|problem talking to the database|slurmdbd",
                       re.IGNORECASE)


def transient(message: str) -> bool:
    """Is this SLURM error one that goes away by itself (controller or database restarting)?"""
    return bool(TRANSIENT.search(message or ""))


def alive(state: str | None) -> bool:
    """Pending or running; also while the state is unknown or not yet queried (never 'dead' by guess)."""
    return state is None or state == UNKNOWN or state in ALIVE_STATES


@dataclass
class Answer:
    states: dict[str, str]
    calls: list[str]
    error: str | None = None


def _run(cmd: list[str]) -> subprocess.CompletedProcess | str:
    """The finished command, or the reason it could not be run / failed (a one-line string)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as err:
        return f"{cmd[0]}: {type(err).__name__}: {err}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"{cmd[0]} exited {done.returncode}: {lines[-1] if lines else 'no message'}"
    return done


def query(job_ids: list[str]) -> Answer:
    """The state of each job: ``sacct`` first, ``squeue`` for what it cannot answer, else UNKNOWN."""
    answer = Answer({}, [])
    if not job_ids:
        return answer
    ids = ",".join(sorted(set(job_ids)))
    answer.calls.append("sacct")
    done = _run(["sacct", "-X", "-n", "-P", "-o", "JobIDRaw,State", "-j", ids])
    if isinstance(done, str):
        answer.error = done
    else:
        for line in done.stdout.splitlines():
            job, _, state = line.partition("|")
            if job.strip() and state.strip():
                answer.states[job.strip()] = state.split()[0]  # "CANCELLED by 0" -> CANCELLED
    missing = [j for j in job_ids if j not in answer.states]
    if missing:
        answer.calls.append("squeue")
        done = _run(["squeue", "-h", "-u", str(os.getuid()), "-o", "%i|%T"])
        if isinstance(done, str):
            answer.error = "; ".join(filter(None, [answer.error, done]))
            answer.states.update({j: UNKNOWN for j in missing})
        else:
            listed = dict(line.split("|", 1) for line in done.stdout.splitlines() if "|" in line)
            answer.states.update({j: listed.get(j, ENDED).strip() for j in missing})
    return answer


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)  # blocks while another process refreshes: it then reads the result
        yield
    finally:
        os.close(fd)


class SharedStates:
    """Job states shared by the processes that wait on jobs of one workflow (see the module text)."""

    def __init__(self, folder: str | Path, interval: float):
        self.folder = Path(folder)
        self.interval = max(float(interval), 0.1)
        self.path = self.folder / STATE_FILE

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            if isinstance(data, dict) and "states" in data:
                return data
        except (OSError, ValueError):
            pass
        return {"states": {}, "watch": {}, "next": 0.0, "failures": 0, "error": None, "queries": []}

    def states(self, job_ids: list[str], refresh_missing: bool = False) -> dict[str, str | None]:
        """Each job's last known state (None: not queried yet); refreshes when the answer is due
        (or, with ``refresh_missing``, a one-off reader such as ``grid status``, when a job has
        never been queried)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with _locked(self.folder / LOCK_FILE):
            data = self._read()
            now = time.time()
            # follow these jobs (the time of interest is written at most once per interval)
            renewed = [j for j in job_ids if now - data["watch"].get(j, 0.0) > self.interval]
            data["watch"].update({j: now for j in renewed})
            missing = refresh_missing and any(j not in data["states"] for j in job_ids)
            if now >= data["next"] or missing:
                self._refresh(data, now)
            elif renewed:
                atomic.write_json(self.path, data)
            return {j: data["states"].get(j) for j in job_ids}

    def _refresh(self, data: dict, now: float) -> None:
        # a job nobody asked about for a while is no longer followed (its waiter has ended)
        forget = now - max(10 * self.interval, 120.0)
        data["watch"] = {j: t for j, t in data["watch"].items() if t >= forget}
        answer = query(list(data["watch"]))
        data["states"] = {j: s for j, s in {**data["states"], **answer.states}.items() if j in data["watch"]}
        data["failures"] = data["failures"] + 1 if answer.error else 0
        data["error"] = answer.error
        backoff = min(self.interval * 2 ** data["failures"], MAX_BACKOFF_S) if answer.error else self.interval
        data["next"] = time.time() + backoff  # counted from the answer: queries never come closer than this
        # the last queries made (time, commands): what `grid status` and the query-count benchmark read
        data["queries"] = (data.get("queries") or [])[-199:] + [[now, answer.calls]]
        atomic.write_json(self.path, data)

    def last_error(self) -> str | None:
        return self._read().get("error")


def runs_folder(run_dir: str | Path) -> Path:
    """Where the shared state file of a run's workflow lives: the folder holding the run folders."""
    return Path(run_dir).resolve().parent
