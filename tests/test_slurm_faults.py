"""SLURM when it misbehaves, with stand-ins for sbatch / sacct / squeue (no cluster needed):
accounting down, controller unreachable, transient sbatch errors, many waiters sharing queries.
The real cluster's faults are in test_chaos.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ENV
from dlarepro.executors import ExecutorError, make_executor
from dlarepro.executors.slurmqueue import ENDED, UNKNOWN, SharedStates, query

CONTROLLER_DOWN = "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"


class FakeSlurm:
    """Scripts named sbatch, sacct and squeue first on PATH. Each logs '<time> <name> <args>' and
    then runs its current behaviour, a bash snippet that tests change between calls."""

    def __init__(self, folder: Path, monkeypatch):
        self.bin, self.log = folder / "bin", folder / "calls.log"
        self.bin.mkdir(parents=True)
        for name in ("sbatch", "sacct", "squeue"):
            script = self.bin / name
            script.write_text(f'#!/bin/bash\necho "$(date +%s.%N) {name} $*" >> {self.log}\n'
                              f'source {self.bin / (name + ".sh")}\n')
            script.chmod(script.stat().st_mode | stat.S_IEXEC)
            self.set(name, "exit 1")
        monkeypatch.setenv("PATH", f"{self.bin}:{os.environ['PATH']}")

    def set(self, name: str, body: str) -> None:
        (self.bin / f"{name}.sh").write_text(body + "\n")

    def calls(self, name: str) -> list[float]:
        if not self.log.exists():
            return []
        return [float(line.split()[0]) for line in self.log.read_text().splitlines() if line.split()[1] == name]


@pytest.fixture()
def slurm(tmp_path, monkeypatch) -> FakeSlurm:
    return FakeSlurm(tmp_path / "fake", monkeypatch)


def test_unknown_is_not_dead(slurm):
    slurm.set("sacct", "echo 'sacct: error: Problem talking to the database: Connection refused' >&2; exit 1")
    slurm.set("squeue", "echo '41|RUNNING'")
    assert query(["41", "42"]).states == {"41": "RUNNING", "42": ENDED}  # the controller answers for accounting
    slurm.set("squeue", "echo 'squeue: error: Unable to contact slurm controller (connect failure)' >&2; exit 1")
    answer = query(["41"])
    assert answer.states == {"41": UNKNOWN} and "Unable to contact slurm controller" in answer.error
    slurm.set("sacct", "echo '41|CANCELLED by 0'")
    assert query(["41"]).states == {"41": "CANCELLED"}


def test_attach_waits_while_slurm_cannot_tell_and_never_takes_the_job_for_dead(slurm, tmp_path):
    slurm.set("sacct", "exit 1")  # accounting down for the whole test
    counter = tmp_path / "n"
    # the controller is restarting for the first three queries, then lists the job as running
    slurm.set("squeue", f'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; '
                        f'if [ $n -lt 3 ]; then echo "squeue: error: Unable to contact slurm controller" >&2; exit 1; fi; '
                        f'echo "77|RUNNING"')
    said = []
    backend = make_executor("slurm", {"state_unknown_s": 60})
    folder = tmp_path / "runs/r/submitit"
    attached = backend.attach({"executor": "slurm", "job_id": "77"}, folder, poll_seconds=0.05, report=said.append)
    assert attached is not None and attached.state == "RUNNING"
    assert any("waiting, not submitting it again" in s for s in said)
    assert not slurm.calls("sbatch")
    # never answered: a clear error after state_unknown_s, still no submission
    slurm.set("squeue", "exit 1")
    backend = make_executor("slurm", {"state_unknown_s": 1})
    with pytest.raises(ExecutorError, match="not submitting a duplicate"):
        backend.attach({"executor": "slurm", "job_id": "78"}, folder, poll_seconds=0.05)


def submitit_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_transient_sbatch_errors_are_retried_and_leave_no_files(slurm, tmp_path):
    counter = tmp_path / "n"
    slurm.set("sbatch", f'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; '
                        f'if [ $n -lt 2 ]; then echo "{CONTROLLER_DOWN}" >&2; exit 1; fi; echo "Submitted batch job 4242"')
    folder = tmp_path / "runs/r/submitit"
    said = []
    submission = make_executor("slurm", {}).submit(len, folder, "r", 1, said.append)
    assert submission.record["job_id"] == "4242" and len(slurm.calls("sbatch")) == 3
    assert sum("retrying" in s for s in said) == 2
    # no stray pickle or script of the failed attempts (submitit links the job's own script back)
    assert not [n for n in submitit_files(folder) if not n.startswith("4242_") and not (folder / n).is_symlink()]


def test_real_sbatch_errors_fail_at_once_and_transient_ones_after_a_bounded_time(slurm, tmp_path):
    folder = tmp_path / "runs/r/submitit"
    slurm.set("sbatch", 'echo "sbatch: error: invalid partition specified: nope" >&2; exit 1')
    with pytest.raises(ExecutorError, match="sbatch failed: sbatch: error: invalid partition specified: nope"):
        make_executor("slurm", {}).submit(len, folder, "r", 1)
    assert len(slurm.calls("sbatch")) == 1 and submitit_files(folder) == []
    slurm.set("sbatch", f'echo "{CONTROLLER_DOWN}" >&2; exit 1')
    with pytest.raises(ExecutorError, match=r"sbatch failed 2 time\(s\) over 3 s \(submit_retry_s\)"):
        make_executor("slurm", {"submit_retry_s": 3}).submit(len, folder, "r", 1)
    assert submitit_files(folder) == []


def test_no_duplicate_submission_while_accounting_is_down(slurm, tmp_path):
    """A restarted workflow finds job.json; sacct fails. The job is followed through squeue until
    it ends; sbatch is never called (today's failure: the job was taken for dead and resubmitted)."""
    from dlarepro.classification.config import resolve
    from dlarepro.data import write_synthetic_cifar
    from dlarepro.identity import RunRecord, identity_of_config
    from dlarepro.submit import submit_record

    write_synthetic_cifar(tmp_path / "data", "cifar10", n_train=100, n_test=10)
    run_dir = tmp_path / "runs/cifar10-none-d11-s0"
    config = resolve(dict(dataset="cifar10", arch="none", depth=11, data_root=str(tmp_path / "data"),
                          out_dir=str(run_dir), recipe="smoke"))
    run_dir.mkdir(parents=True)
    (run_dir / "job.json").write_text(json.dumps({"executor": "slurm", "job_id": "55", "submitit_folder":
                                                  str(run_dir / "submitit"), "stderr": str(run_dir / "55.err")}))
    slurm.set("sacct", "echo 'sacct: error: slurmdbd: Connection refused' >&2; exit 1")
    counter = tmp_path / "n"
    slurm.set("squeue", f'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; '
                        f'if [ $n -lt 4 ]; then echo "55|RUNNING"; fi')
    status = submit_record(RunRecord(identity_of_config(config), config), executor="slurm", poll_seconds=0.05)
    assert status == 1  # the job ended without metrics.json: reported as failed, not submitted again
    assert not slurm.calls("sbatch") and json.loads((run_dir / "job.json").read_text())["job_id"] == "55"


WAITER = """
import sys, time
from dlarepro.executors.slurmqueue import SharedStates
shared, job, until = SharedStates(sys.argv[1], float(sys.argv[2])), sys.argv[3], time.time() + float(sys.argv[4])
seen = set()
while time.time() < until:
    seen.add(shared.states([job])[job])
    time.sleep(0.01)
print(sorted(s for s in seen if s))
"""


def test_waiters_of_one_workflow_share_one_query_per_interval(slurm, tmp_path):
    """Twelve processes poll their own job as fast as they can for 4 s; SLURM is asked at most once
    per 0.5 s interval between them, and every process learns its job's state."""
    slurm.set("sacct", 'ids="${@: -1}"; for id in ${ids//,/ }; do echo "$id|RUNNING"; done')
    interval, seconds = 0.5, 4.0
    procs = [subprocess.Popen([sys.executable, "-c", WAITER, str(tmp_path / "runs"), str(interval), str(100 + i),
                               str(seconds)], stdout=subprocess.PIPE, text=True, env={**ENV, "PATH": os.environ["PATH"]})
             for i in range(12)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all("RUNNING" in out for out in outputs), outputs
    calls = slurm.calls("sacct")
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    print(f"12 waiters, {seconds} s, interval {interval} s: {len(calls)} sacct calls, smallest gap {min(gaps):.3f} s")
    assert min(gaps) >= interval * 0.95 and len(calls) <= seconds / interval + 2
    assert not slurm.calls("squeue")
    shared = json.loads((tmp_path / "runs/.slurm-state.json").read_text())
    assert len(shared["queries"]) == len(calls)
