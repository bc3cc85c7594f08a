"""Chaos on the local SLURM cluster: a small grid trained under seeded random faults of every kind
(USR2 and plain scancel, SIGKILL of the trainer and of the workflow, a controller restart,
accounting down, a truncated checkpoint). Afterwards every run is bit-identical to an
uninterrupted reference, no two jobs ever held one run folder (SLURM's own job intervals and the
run folder's lock history say so), and no temporary file is left.

Needs the cluster of workflow/slurm-local (it is restored after each outage). A few minutes.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from conftest import ENV, REPO, epochs_lasting, snakemake_command
from dlarepro import grid as gridlib
from dlarepro import runlock
from dlarepro.classification.engine import train

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]
SEED = int(os.environ.get("CHAOS_SEED", "13"))
STATE = Path(os.environ.get("SLURM_LOCAL_STATE", "/var/lib/dla-repro-slurm"))
KINDS = ("usr2", "scancel", "kill_trainer", "truncate_checkpoint", "kill_workflow", "controller_restart",
         "accounting_down")
ON_A_TRAINER = {"usr2", "scancel", "kill_trainer", "truncate_checkpoint"}
ARCHS = ("none", "dla_l")


def cluster(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "workflow/slurm-local" / args[0]), *args[1:]], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    if cluster("status.sh", "--quiet").returncode != 0:
        pytest.fail("the local SLURM test cluster is not usable: workflow/slurm-local/start.sh (make test does)")
    yield
    assert cluster("start.sh").returncode == 0  # whatever happened, the cluster is left running


def stop_daemon(name: str) -> None:
    pid = int((STATE / "run" / f"{name}.pid").read_text().strip())
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 30
    while Path(f"/proc/{pid}").exists() and time.time() < deadline:
        time.sleep(0.2)


class Workflow:
    """The Snakemake process of the grid, started and killed as a person (or a crash) would."""

    def __init__(self, workdir: Path):
        self.workdir, self.proc, self.starts = workdir, None, 0
        self.log = open(workdir / "snakemake.log", "a")

    def start(self) -> None:
        subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(self.workdir), "--unlock"],
                       env=ENV, capture_output=True)
        # the README's command (the slurm profile sets retries, rerun-incomplete, rerun triggers)
        cmd = snakemake_command(self.workdir, config=["executor_options={gpus_per_node: 0}"])
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
        self.starts += 1

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)


def trainers(folders: list[Path]) -> list[tuple[Path, dict]]:
    """The run folders a trainer holds right now, with what it wrote into the lock file."""
    held = []
    for folder in folders:
        holder = runlock.read_holder(folder) if runlock.is_locked(folder) else None
        if holder and holder.get("job_id"):
            held.append((folder, holder))
    return held


def inject(kind: str, target: tuple[Path, dict] | None, workflow: Workflow) -> str:
    if kind == "usr2":
        subprocess.run(["scancel", "--signal=USR2", target[1]["job_id"]], check=True)
    elif kind == "scancel":
        subprocess.run(["scancel", target[1]["job_id"]], check=True)
    elif kind == "kill_trainer":
        os.kill(int(target[1]["pid"]), signal.SIGKILL)
    elif kind == "truncate_checkpoint":
        path = target[0] / "checkpoint.pt"
        if path.exists():
            path.write_bytes(path.read_bytes()[:1000])
        os.kill(int(target[1]["pid"]), signal.SIGKILL)  # the next attempt must resume from what is on disk
    elif kind == "kill_workflow":
        workflow.kill()
        time.sleep(2)
        workflow.start()
    elif kind in ("controller_restart", "accounting_down"):
        stop_daemon("slurmctld" if kind == "controller_restart" else "slurmdbd")
        time.sleep(5 if kind == "controller_restart" else 15)
        assert cluster("start.sh").returncode == 0
    return f"{kind}" + (f" on {target[0].name} (job {target[1]['job_id']})" if target else "")


def parse_time(text: str) -> float | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return None


def job_intervals(job_ids: set[str]) -> list[tuple[str, float, float]]:
    """(job id, start, end) of every run of these jobs, requeued instances included (sacct -D)."""
    out = subprocess.run(["sacct", "-j", ",".join(sorted(job_ids)), "-X", "-D", "-n", "-P", "-o", "JobIDRaw,Start,End"],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        job, start, end = line.split("|")
        if parse_time(start) is not None:
            rows.append((job, parse_time(start), parse_time(end) or float("inf")))
    return rows


def reference_weights(workdir: Path, run_id: str, tmp_path: Path) -> str:
    config = gridlib.run_record(gridlib.load(workdir / "params.yaml"), run_id, workdir=workdir).config
    config["out_dir"] = str(tmp_path / f"reference-{run_id}")
    return train(config, progress=False)["weights_sha256"]


def test_seeded_faults_leave_every_run_bit_identical(tmp_path):
    rng = random.Random(SEED)
    workdir = tmp_path / "wf"
    workdir.mkdir()
    grid = {"profile": "smoke", "profiles": {"smoke": {
        "recipe": "smoke", "seeds": [0], "data": "synthetic", "synthetic_size": {"n_train": 192, "n_test": 50},
        "depth_map": {20: 11},
        "overrides": {"epochs": 1, "milestones": [], "max_batches_per_epoch": 3, "batch_size": 64,
                      "threads": 1, "log_every": 1}}},
        "experiments": {"table1": [{"datasets": ["cifar10"], "depths": [20], "archs": list(ARCHS)}]}}
    # 70 s of DLA-L training on this machine (measured first): the faults on a trainer need a run that
    # is still training, whatever the machine's speed
    epochs = epochs_lasting(70, grid, "dla_l", tmp_path / "probe")
    grid["profiles"]["smoke"]["overrides"].update(epochs=epochs, milestones=[epochs * 3 // 4])
    (workdir / "params.yaml").write_text(yaml.safe_dump(grid))
    run_ids = [f"cifar10-{arch}-d11-s0" for arch in ARCHS]
    folders = [workdir / "results/smoke/runs" / r for r in run_ids]
    done = [workdir / "results/smoke/done" / f"{r}.json" for r in run_ids]

    # every kind once, faults on a trainer alternating with the others (so that the runs are still
    # training when each trainer fault comes), then three more drawn at random
    on_trainer = rng.sample(sorted(ON_A_TRAINER), len(ON_A_TRAINER))
    others = rng.sample(sorted(set(KINDS) - ON_A_TRAINER), len(KINDS) - len(ON_A_TRAINER))
    plan = [k for pair in zip(on_trainer, others + [None]) for k in pair if k] + [rng.choice(KINDS) for _ in range(3)]
    workflow = Workflow(workdir)
    workflow.start()
    injected, started = [], time.time()
    try:
        for kind in plan:
            time.sleep(rng.uniform(2, 6))
            target = None
            if kind in ON_A_TRAINER:
                deadline = time.time() + 60
                while not (held := trainers(folders)) and time.time() < deadline and not all(p.exists() for p in done):
                    time.sleep(0.5)
                if not held:
                    continue  # nothing is training any more: the fault has no target
                target = rng.choice(held)
            injected.append((time.time(), inject(kind, target, workflow)))
            if not workflow.running() and not all(p.exists() for p in done):
                workflow.start()  # e.g. a job failed twice (retries used up): the README's command again
        deadline = time.time() + 900
        while not (all(p.exists() for p in done) and not workflow.running()):
            assert time.time() < deadline, (workdir / "snakemake.log").read_text()[-5000:]
            if not workflow.running() and not all(p.exists() for p in done):
                workflow.start()
            time.sleep(2)
    finally:
        workflow.kill()
        cluster("start.sh")
    elapsed = time.time() - started

    # every run bit-identical to an uninterrupted reference
    identical = 0
    for run_id, folder in zip(run_ids, folders):
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["weights_sha256"] == reference_weights(workdir, run_id, tmp_path), run_id
        identical += 1

    # no two jobs ever held one run folder: SLURM's intervals never overlap, and every time a new job
    # took the lock without the previous holder releasing it, that holder's job had already ended
    overlaps, handovers = 0, 0
    for folder in folders:
        record = json.loads((folder / "job.json").read_text())
        events = [json.loads(line) for line in (folder / "lock.log").read_text().splitlines()]
        jobs = {record["job_id"], *record.get("earlier", []), *(e["job_id"] for e in events if e.get("job_id"))}
        intervals = job_intervals(jobs)
        for i, (job_a, start_a, end_a) in enumerate(intervals):
            for job_b, start_b, end_b in intervals[i + 1:]:
                overlaps += start_b < end_a and start_a < end_b
        holder = None
        for event in events:
            if event["event"] == "acquired":
                if holder is not None and holder["pid"] != event["pid"]:
                    handovers += 1  # the holder died holding the lock: its job (instance) had ended
                    mine = [i for i in intervals if i[0] == holder["job_id"] and i[1] <= holder["time"] + 1.0]
                    assert mine and max(mine, key=lambda i: i[1])[2] <= event["time"] + 1.0, (folder.name, holder, event)
                holder = event
            elif holder is not None and event["pid"] == holder["pid"]:
                holder = None
        # no temporary file of any writer, no stray submission file
        leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
        leftovers += [p.name for p in (folder / "submitit").iterdir()
                      if p.name.startswith(".submission_file") and not p.is_symlink()
                      or (p.suffix == ".pkl" and not p.name.split("_")[0].isdigit())]
        assert not leftovers, (folder.name, leftovers)
    kinds = collections.Counter(text.split()[0] for _, text in injected)
    print(f"\nchaos (seed {SEED}): {len(injected)} faults in {elapsed:.0f} s: {dict(kinds)}; "
          f"{identical}/{len(run_ids)} runs bit-identical; {overlaps} overlapping jobs; "
          f"{handovers} lock handovers after a holder died; {workflow.starts} workflow starts")
    for at, text in injected:
        print(f"  +{at - started:5.1f} s  {text}")
    assert overlaps == 0
    assert set(kinds) == set(KINDS), kinds  # every kind of fault was injected
