"""Multi-process (DDP) training of ImageNet runs on the CPU (gloo), on tiny generated ImageFolder data.

* torchrun: a two-process run killed with SIGTERM mid-epoch resumes to the weights of an
  uninterrupted two-process run; resuming with another number of processes is refused.
* the real local SLURM: the grid's ImageNet run submitted by Snakemake through submitit as one job
  of two tasks (``tasks_per_node = 2``), warned with ``scancel --signal=USR2``: submitit requeues it,
  it resumes and ends with the same weights as the torchrun reference.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import BIN, REPO, snakemake_command
from dlarepro import layout
from dlarepro.checkpoints import read_checkpoint
from dlarepro.data import write_synthetic_imagefolder

ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
#: fixed torchrun ports and a SLURM job: in the lane of the SLURM tests when run in parallel (make test)
pytestmark = pytest.mark.xdist_group("slurm")
# drop_path > 0: each rank draws its own masks, and the checkpoint must restore every rank's RNG
RUN = {"epochs": 2, "warmup_epochs": 1, "step_size": None, "milestones": [2], "batch_size": 4,
       "test_batch_size": 2, "crop_size": 64, "threads": 1, "max_batches_per_epoch": 3, "log_every": 1,
       "drop_path": 0.2}
IMAGES = {"n_classes": 4, "n_train_per_class": 4, "n_val_per_class": 2, "size": 72}


def torchrun(config: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "dlarepro", "train", "--config", str(config)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                            start_new_session=True)


def run_config(tmp: Path, name: str) -> Path:
    config = {"dataset": "imagenet", "arch": "dla_l", "depth": 50, "recipe": "imagenet", "seed": 0,
              "data_root": str(tmp / "imagenet"), "out_dir": str(tmp / name), **RUN}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """An uninterrupted two-process run (torchrun): the weights every resumed run must match."""
    tmp = tmp_path_factory.mktemp("ddp")
    write_synthetic_imagefolder(tmp / "imagenet", **IMAGES)
    proc = torchrun(run_config(tmp, "reference"), 29611)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    metrics = json.loads((tmp / "reference" / "metrics.json").read_text())
    return {"tmp": tmp, "metrics": metrics, "log": out}


def test_two_processes_train_one_model(reference):
    m = reference["metrics"]
    assert m["world_size"] == 2 and m["epochs"] == 2 and m["synthetic"] is True
    assert 0 <= m["final_top1"] <= 100
    assert reference["log"].count("epoch 1/2:") == 1  # only rank 0 reports and writes


def test_killed_two_process_run_resumes_bit_identical(reference):
    tmp = reference["tmp"]
    config = run_config(tmp, "killed")
    proc = torchrun(config, 29612)
    # wait until epoch 2 has taken its first step (its first batch logged): a fixed sleep after the
    # epoch-1 checkpoint raced a fast run to its end, where SIGTERM stops at once, unsaved
    seen, watchdog = [], threading.Timer(300, proc.kill)  # a run that hangs silently fails, not the suite
    watchdog.start()
    for line in proc.stdout:
        seen.append(line)
        if "epoch 2 batch 1/" in line:
            break
    watchdog.cancel()
    # SIGTERM to the training processes (as SLURM sends it); torchrun itself sees them stop
    subprocess.run(["pkill", "-TERM", "-f", f"dlarepro train --config {config}"], check=False)
    out, _ = proc.communicate(timeout=300)
    out = "".join(seen) + out
    assert "SIGTERM received: checkpoint written" in out, out[-3000:]
    assert not (tmp / "killed" / "metrics.json").exists()
    again = torchrun(config, 29613)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    assert "resuming from" in out
    metrics = json.loads((tmp / "killed" / "metrics.json").read_text())
    assert metrics["attempts"] == 2
    states = read_checkpoint(tmp / "killed" / "checkpoint.pt")["rng"]  # one per rank, each its own
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])
    assert metrics["weights_sha256"] == reference["metrics"]["weights_sha256"]


def test_resume_with_another_number_of_processes_is_refused(reference):
    tmp = reference["tmp"]
    folder = tmp / "reference"
    (tmp / "other").mkdir()
    for name in ("checkpoint.pt", "config.yaml"):
        (tmp / "other" / name).write_bytes((folder / name).read_bytes())
    done = subprocess.run([sys.executable, "-m", "dlarepro", "train", "--config", str(run_config(tmp, "other"))],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode != 0
    assert "written by 2 process(es) and this job has 1" in done.stderr


# ---------------------------------------------------------------------------------------------
# through Snakemake and submitit on the local SLURM


SLURM_OPTIONS = ["executor_options_by_family={imagenet: {gpus_per_node: 0, tasks_per_node: 2, cpus_per_task: 1, "
                 "mem_gb: 4, timeout_min: 10, signal_delay_s: 20}}"]


def imagenet_grid() -> dict:
    return {"profile": "tiny",
            "profiles": {"tiny": {"recipe": "smoke", "seeds": [0], "data": "synthetic",
                                  "imagenet": {"synthetic_size": IMAGES, "overrides": RUN}}},
            "experiments": {"table2": [{"datasets": ["imagenet"], "depths": [50], "archs": ["dla_l"]}]}}


def test_two_task_slurm_job_is_requeued_and_resumes(reference, tmp_path):
    status = subprocess.run(["bash", str(REPO / "workflow/slurm-local/status.sh")], capture_output=True, text=True)
    assert status.returncode == 0, "the local SLURM is not running (make test starts it)\n" + status.stdout
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(imagenet_grid(), sort_keys=False))
    run_id = "imagenet-dla_l-d50-s0"
    folder = tmp_path / layout.run_dir("tiny", run_id)
    cmd = snakemake_command(tmp_path, "runs", cores=2, config=SLURM_OPTIONS)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                            start_new_session=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and not any(
                "epoch 2 batch 1/3" in p.read_text(errors="replace") for p in folder.glob("submitit/*_0_log.out")):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        job_id = json.loads((folder / "job.json").read_text())["job_id"]
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-4000:]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["attempts"] == 2
    history = subprocess.run(["sacct", "-j", job_id, "-n", "-P", "-o", "State", "-D"], capture_output=True,
                             text=True).stdout.split()
    assert "REQUEUED" in history
    assert len(list(folder.glob("submitit/*_1_log.out"))) == 1  # the second task's log: two processes ran
    assert metrics["weights_sha256"] == reference["metrics"]["weights_sha256"]
