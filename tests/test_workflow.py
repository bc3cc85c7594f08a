"""The grid through Snakemake, submitit and a real one-node SLURM; DVC on top.

Needs the local cluster of workflow/slurm-local (``make test`` installs and starts it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import ENV, REPO, epochs_lasting, run_snakemake, snakemake_command
from dlarepro import grid as gridlib
from dlarepro.classification.engine import train

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]


def tiny_grid(n_train: int = 128, **profile_overrides) -> dict:
    overrides = {"epochs": 2, "milestones": [1], "max_batches_per_epoch": 2, "threads": 1}
    overrides.update(profile_overrides)
    return {
        "profile": "smoke",
        "profiles": {"smoke": {"recipe": "smoke", "seeds": [0], "data": "synthetic",
                               "synthetic_size": {"n_train": n_train, "n_test": 50}, "depth_map": {20: 11},
                               "overrides": overrides}},
        "experiments": {"table1": [{"datasets": ["cifar10"], "depths": [20], "archs": ["none", "dla_l"]}]},
    }


def make_workdir(path: Path, grid: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "params.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


snakemake = run_snakemake


def sacct(job_id: str, *extra: str) -> list[str]:
    out = subprocess.run(["sacct", "-j", job_id, "-n", "-P", "-o", "State", *extra], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line]


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    status = subprocess.run(["bash", str(REPO / "workflow/slurm-local/status.sh")], capture_output=True, text=True)
    if status.returncode != 0:
        pytest.fail("the local SLURM test cluster is not usable; start it with "
                    "workflow/slurm-local/install.sh && workflow/slurm-local/start.sh (make test does)\n"
                    + status.stdout[-2000:] + status.stderr[-2000:])


def run_dir(workdir: Path, run_id: str) -> Path:
    return workdir / "results" / "smoke" / "runs" / run_id


def reference_sha(workdir: Path, run_id: str, tmp_path: Path) -> str:
    """Train the same run uninterrupted in this process: the weights a resumed job must match."""
    from dlarepro import grid

    config = grid.run_record(grid.load(workdir / "params.yaml"), run_id, workdir=workdir).config
    config["out_dir"] = str(tmp_path / f"reference-{run_id}")
    return train(config, progress=False)["weights_sha256"]


def test_small_grid_runs_on_slurm(tmp_path):
    workdir = make_workdir(tmp_path / "wf", tiny_grid())
    done = snakemake(workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    for run_id in ("cifar10-none-d11-s0", "cifar10-dla_l-d11-s0"):
        folder = run_dir(workdir, run_id)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["synthetic"] is True and metrics["epochs"] == 2
        record = json.loads((folder / "job.json").read_text())
        assert record["executor"] == "slurm"
        assert sacct(record["job_id"], "-X") == ["COMPLETED"]
    again = snakemake(workdir)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def log_shows(folder: Path, text: str) -> bool:
    return any(text in p.read_text(errors="replace") for p in folder.glob("submitit/*_log.out"))


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(snakemake_command(workdir, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                            start_new_session=True)


@pytest.mark.parametrize("how", ["preempt", "cancel"])
def test_interrupted_job_resumes_to_the_same_weights(tmp_path, how):
    """``scancel --signal=USR2`` (SLURM's pre-timeout/preemption warning): submitit requeues the job;
    a plain ``scancel``: the job is cancelled and Snakemake's retry submits it again. Either way the
    run resumes from its checkpoint and ends bit-identical to an uninterrupted run. The fault comes in
    epoch 2, with at least 10 s of training left on this machine (measured first)."""
    grid = tiny_grid(n_train=256, milestones=[2], max_batches_per_epoch=3, log_every=1)
    grid["experiments"]["table1"][0]["archs"] = ["dla_b"]
    grid["profiles"]["smoke"]["overrides"]["epochs"] = 2 + epochs_lasting(10, grid, "dla_b", tmp_path / "probe")
    workdir = make_workdir(tmp_path / "wf", grid)
    run_id = "cifar10-dla_b-d11-s0"
    folder = run_dir(workdir, run_id)
    proc = start_snakemake(workdir)
    try:
        wait_for(lambda: log_shows(folder, "epoch 2 batch 2/3"), 300, "the job to reach epoch 2")
        job_id = json.loads((folder / "job.json").read_text())["job_id"]
        scancel = ["scancel", "--signal=USR2", job_id] if how == "preempt" else ["scancel", job_id]
        subprocess.run(scancel, check=True)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["attempts"] == 2
    history = sacct(job_id, "-D") if how == "preempt" else sacct(job_id, "-X")
    assert ("REQUEUED" in history) if how == "preempt" else (history == ["CANCELLED by 0"] or "CANCELLED" in history[0])
    if how == "cancel":
        assert json.loads((folder / "job.json").read_text())["job_id"] != job_id  # submitted again
    assert metrics["weights_sha256"] == reference_sha(workdir, run_id, tmp_path)


def test_time_limit_requeues_and_resumes(tmp_path):
    """A real time limit: SLURM warns with USR2, the run checkpoints, submitit requeues it. SLURM may
    send the warning up to 60 s earlier than asked (sbatch --signal), so with a 1-minute limit and a
    20 s warning it comes at most 40 s after the start (here mostly 10-20 s: ~8 s of training per
    attempt). The run is given 60 s of training on this machine (measured first), more than the latest
    warning leaves, so the first attempt is always interrupted; each attempt costs ~30 s."""
    grid = tiny_grid(max_batches_per_epoch=2)
    grid["experiments"]["table1"][0]["archs"] = ["mrla_l"]
    epochs = epochs_lasting(60, grid, "mrla_l", tmp_path / "probe")
    grid["profiles"]["smoke"]["overrides"].update(epochs=epochs, milestones=[epochs * 2 // 3])
    workdir = make_workdir(tmp_path / "wf", grid)
    done = snakemake(workdir, config=["executor_options={timeout_min: 1}"])
    assert done.returncode == 0, done.stdout + done.stderr
    folder = run_dir(workdir, "cifar10-mrla_l-d11-s0")
    metrics = json.loads((folder / "metrics.json").read_text())
    job_id = json.loads((folder / "job.json").read_text())["job_id"]
    assert metrics["attempts"] >= 2 and "REQUEUED" in sacct(job_id, "-D")
    assert metrics["weights_sha256"] == reference_sha(workdir, "cifar10-mrla_l-d11-s0", tmp_path)


def test_killed_snakemake_reattaches_and_finishes_only_what_is_missing(tmp_path):
    # The test cluster has one (fake) GPU, so the two jobs run one after the other, in an order
    # Snakemake chooses: the workflow is killed once one run has finished and the other has
    # started; the other must still be training when Snakemake comes back (after --unlock and its
    # start-up, ~10 s): each run gets 40 s of training on this machine (measured first; a fixed epoch
    # count was finished before that on a faster machine).
    grid = tiny_grid(n_train=256, milestones=[3], max_batches_per_epoch=3, batch_size=64, log_every=1)
    grid["experiments"]["table1"][0]["archs"] = ["none", "dla_b"]
    grid["profiles"]["smoke"]["overrides"]["epochs"] = epochs_lasting(40, grid, "dla_b", tmp_path / "probe")
    workdir = make_workdir(tmp_path / "wf", grid)
    runs = [run_dir(workdir, "cifar10-none-d11-s0"), run_dir(workdir, "cifar10-dla_b-d11-s0")]

    def one_finished_one_running():
        done = [r for r in runs if (r / "metrics.json").exists()]
        running = [r for r in runs if r not in done and log_shows(r, "epoch 2 batch")]
        return (done[0], running[0]) if len(done) == 1 and running else None

    proc = start_snakemake(workdir)
    try:
        quick, slow = wait_for(one_finished_one_running, 300, "one run finished and the other one running")
        os.killpg(proc.pid, signal.SIGKILL)  # the workflow dies; the SLURM job does not
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    job_id = json.loads((slow / "job.json").read_text())["job_id"]
    assert not (slow / "metrics.json").exists()
    finished_at = (quick / "metrics.json").stat().st_mtime_ns
    unlock(workdir)
    again = snakemake(workdir)  # the same command: the profile sets what a restart needs
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"re-attaching to slurm job {job_id}" in again.stderr + again.stdout
    assert json.loads((slow / "job.json").read_text())["job_id"] == job_id  # no duplicate submission
    assert (quick / "metrics.json").stat().st_mtime_ns == finished_at  # not retrained
    assert json.loads((slow / "metrics.json").read_text())["attempts"] == 1


def unlock(workdir: Path) -> None:
    subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--unlock"],
                   env=ENV, check=True, capture_output=True)


def test_restart_after_a_killed_workflow_is_one_command(tmp_path):
    """Snakemake is killed while a job runs; the job finishes on its own. `--unlock` and the README's
    command then finish the grid without retraining or rewriting anything (Snakemake used to stop
    with IncompleteFilesException and ask for --rerun-incomplete, which deleted metrics.json)."""
    grid = tiny_grid(n_train=256, epochs=8, milestones=[3], max_batches_per_epoch=3, batch_size=64, log_every=1)
    grid["experiments"]["table1"][0]["archs"] = ["none"]
    workdir = make_workdir(tmp_path / "wf", grid)
    folder = run_dir(workdir, "cifar10-none-d11-s0")
    proc = start_snakemake(workdir)
    try:
        wait_for(lambda: log_shows(folder, "epoch 2 batch"), 300, "the job to train")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    job_id = json.loads((folder / "job.json").read_text())["job_id"]
    wait_for(lambda: (folder / "metrics.json").exists(), 300, "the orphaned job to finish")
    finished = (folder / "metrics.json").stat().st_mtime_ns
    unlock(workdir)
    again = snakemake(workdir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "IncompleteFilesException" not in again.stdout + again.stderr
    assert (folder / "metrics.json").stat().st_mtime_ns == finished  # neither retrained nor rewritten
    assert json.loads((folder / "job.json").read_text())["job_id"] == job_id
    assert sacct(job_id, "-X") == ["COMPLETED"]


def test_failed_job_shows_its_error_and_log(tmp_path):
    workdir = make_workdir(tmp_path / "wf", tiny_grid())
    assert snakemake(workdir, "prepare_data").returncode == 0
    batch = workdir / "data/smoke/cifar-10-batches-py/data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])  # corrupt after the data check a submission makes
    done = snakemake(workdir)
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "FAILED" in text and "data_batch_3" in text
    record = json.loads((run_dir(workdir, "cifar10-none-d11-s0") / "job.json").read_text())
    assert f"job logs: {record['stderr']}" in text and Path(record["stderr"]).exists()


def test_missing_data_is_reported_before_submission(tmp_path):
    workdir = make_workdir(tmp_path / "wf", tiny_grid())
    done = subprocess.run(["dla-repro", "submit", "cifar10-none-d11-s0", "--executor", "slurm"], cwd=workdir,
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 2
    assert "data/smoke/cifar-10-batches-py/batches.meta does not exist" in done.stderr
    assert "dla-repro grid prepare-data --profile smoke" in done.stderr
    assert not (workdir / "results").exists()


def test_bad_grid_fails_before_any_submission(tmp_path):
    grid = tiny_grid()
    grid["experiments"]["table1"][0]["depths"] = [21]
    grid["profiles"]["smoke"]["depth_map"] = {}
    workdir = make_workdir(tmp_path / "wf", grid)
    done = snakemake(workdir)
    assert done.returncode != 0
    assert "depth must be 9n+2" in done.stdout + done.stderr
    assert not (workdir / "results").exists()


def test_lint_and_paper_dry_run():
    lint = subprocess.run(["snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, env=ENV)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    dry = subprocess.run(["snakemake", "-n", "--profile", "workflow/profiles/slurm", "--config", "profile=paper"],
                         cwd=REPO, capture_output=True, text=True, env=ENV)
    assert dry.returncode == 0, dry.stderr
    counts = dict(line.split()[:2] for line in dry.stdout.splitlines() if line.split()[:1] == ["train"])
    assert int(counts["train"]) >= 265
    # every ImageNet and COCO job is planned, each detector after the ImageNet run of its backbone
    jobs = {}
    for block in dry.stdout.split("rule ")[1:]:
        fields = dict(line.strip().split(": ", 1) for line in block.splitlines()[1:] if ": " in line)
        if block.startswith("train:"):
            jobs[fields["wildcards"].split("=", 1)[1]] = fields["input"].split(", ")
    runs = gridlib.expand(gridlib.load(REPO / "params.yaml"), "paper")
    planned = {r for r in runs if r.startswith(("imagenet-", "coco-"))}
    assert len(planned) == 30 and planned <= set(jobs)
    for run_id in planned:
        run = runs[run_id]
        if run.detector:
            assert jobs[run_id] == ["results/paper/data/coco.json",
                                    f"results/paper/done/{run.backbone.run_id}.json"], run_id
        else:
            assert jobs[run_id] == ["results/paper/data/imagenet.json"], run_id
    assert "rule prepare_imagenet:" in dry.stdout and "rule prepare_coco:" in dry.stdout
