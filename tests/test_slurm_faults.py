"""SLURM when it misbehaves, with stand-ins for sbatch / sacct / squeue (no cluster needed):
accounting down, controller unreachable, transient sbatch errors, many waiters sharing queries.
The real cluster's faults are in test_chaos.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV
from dlarepro.executors import ExecutorError, make_executor
from dlarepro.executors.slurmqueue import ENDED, UNKNOWN, query

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


def test_grid_status_shows_every_state_with_one_slurm_query(slurm, tmp_path):
    import yaml

    from dlarepro import grid as gridlib
    from dlarepro.prepare import prepare_data
    from dlarepro.submit import submit_record

    archs = ["none", "se", "eca", "dia", "mrla_l", "dla_l"]
    grid = {"profile": "smoke", "profiles": {"smoke": {
        "recipe": "smoke", "seeds": [0], "data": "synthetic", "synthetic_size": {"n_train": 100, "n_test": 10},
        "depth_map": {20: 11}, "overrides": {"epochs": 4, "milestones": [], "max_batches_per_epoch": 1, "threads": 1}}},
        "experiments": {"table1": [{"datasets": ["cifar10"], "depths": [20], "archs": archs}],
                        "table5": [{"datasets": ["cifar10"], "depths": [20], "archs": ["none"]}]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(grid))
    prepare_data(grid, workdir=tmp_path)
    plan = gridlib.plan(grid, workdir=tmp_path)
    runs = {arch: plan[f"cifar10-{arch}-d11-s0"] for arch in archs}
    assert submit_record(runs["none"], executor="debug") == 0  # finished
    edited = type(runs["se"])(runs["se"].identity, {**runs["se"].config, "lr": 0.02})
    assert submit_record(edited, executor="debug") == 0  # trained before the grid's lr changed: stale

    def job(arch: str, job_id: str, **extra) -> Path:
        folder = Path(runs[arch].config["out_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "job.json").write_text(json.dumps({"executor": "slurm", "job_id": job_id, **extra}))
        return folder

    running = job("eca", "71", tasks=1, gpus=1)
    (running / "history.csv").write_text("epoch,epoch_seconds\n1,30.0\n2,40.0\n")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from dlarepro.runlock import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)",
                               str(running)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "held"
    job("dia", "72")
    failed = job("mrla_l", "73", stderr=str(tmp_path / "73_0_log.err"))
    (tmp_path / "73_0_log.err").write_text("Traceback (most recent call last):\n  ...\nValueError: boom at epoch 2\n")
    slurm.set("sacct", "printf '71|RUNNING\\n72|PENDING\\n73|FAILED\\n'")
    try:
        done = subprocess.run([sys.executable, "-m", "dlarepro", "grid", "status"], cwd=tmp_path, capture_output=True,
                              text=True, env={**ENV, "PATH": os.environ["PATH"]}, timeout=300)
        as_json = subprocess.run([sys.executable, "-m", "dlarepro", "grid", "status", "--json"], cwd=tmp_path,
                                 capture_output=True, text=True, env={**ENV, "PATH": os.environ["PATH"]}, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("cifar10-")}
    assert lines["cifar10-none-d11-s0"].split()[1] == "finished"
    assert "stale" in lines["cifar10-se-d11-s0"] and "lr: 0.02 -> 0.05" in lines["cifar10-se-d11-s0"]
    assert "running" in lines["cifar10-eca-d11-s0"] and "epoch 3 of 4, ETA 0.02 h" in lines["cifar10-eca-d11-s0"]
    assert "pending" in lines["cifar10-dia-d11-s0"] and "PENDING" in lines["cifar10-dia-d11-s0"]
    assert "failed" in lines["cifar10-mrla_l-d11-s0"] and "ValueError: boom at epoch 2" in lines["cifar10-mrla_l-d11-s0"]
    assert f"(log: {tmp_path / '73_0_log.err'})" in lines["cifar10-mrla_l-d11-s0"]
    assert "not started" in lines["cifar10-dla_l-d11-s0"]
    counts = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line.startswith(("table", "all"))}
    # columns: finished running pending failed stale unknown interrupted not-started
    assert counts["table1"] == ["1", "1", "1", "1", "1", "0", "0", "1"] and counts["table5"][0] == "1"
    assert "GPU-hours spent" in done.stdout and "estimated device-hours remaining" in done.stdout
    # one query for all jobs; the second command within the poll interval reuses its answer
    assert len(slurm.calls("sacct")) == 1 and not slurm.calls("squeue")
    statuses = {s["run_id"]: s for s in json.loads(as_json.stdout)}
    assert statuses["cifar10-eca-d11-s0"]["remaining_hours"] == pytest.approx(35.0 * 2 / 3600)
    assert failed.is_dir()
