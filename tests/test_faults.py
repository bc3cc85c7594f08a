"""Faults a run meets over weeks on a cluster, without SLURM: two writers, signals at any moment,
edits of the grid and data regenerated under finished or half-trained runs, and the errors a user
can cause (each one line, no traceback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ENV, tiny_config, training_command
from dlarepro import freshness, provenance, runlock
from dlarepro.classification.config import resolve
from dlarepro.data import write_synthetic_cifar, write_synthetic_imagefolder
from dlarepro.data.cifar import load_pickle
from dlarepro.data.synthetic import py2_pickle
from dlarepro.identity import RunRecord, identity_of_config
from dlarepro.runbase import Interrupted, StopSignals
from dlarepro.submit import submit_record

pytestmark = pytest.mark.slow


@pytest.fixture()
def data_root(tmp_path) -> Path:
    root = tmp_path / "data"
    write_synthetic_cifar(root, "cifar10", n_train=256, n_test=100, seed=0)
    return root


tiny = tiny_config


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s lock until it is killed."""
    code = ("import sys, time; from dlarepro.runlock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


# ---------------------------------------------------------------------------------------------
# one writer per run folder


def test_a_second_trainer_refuses_and_names_the_holder(data_root, tmp_path):
    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        second = subprocess.run(training_command("train", tiny(data_root, out)), capture_output=True, text=True,
                                env={**ENV, "DLAREPRO_LOCK_WAIT_S": "0"}, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"is being written by pid {holder.pid} on host" in second.stderr
    assert "Traceback" not in second.stderr
    assert not (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()
    # the holder died (SIGKILL): the kernel released its lock, the next trainer runs
    done = subprocess.run(training_command("train", tiny(data_root, out, epochs=1, milestones=[])),
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in (out / "lock.log").read_text().splitlines()]
    assert [e["event"] for e in events] == ["acquired", "acquired", "released"]
    assert events[0]["pid"] == holder.pid and events[1]["pid"] == events[2]["pid"] != holder.pid


def test_a_job_waits_for_a_dying_holder_then_trains(data_root, tmp_path):
    out = tmp_path / "run"
    holder = hold_lock(out)
    proc = subprocess.Popen(training_command("train", tiny(data_root, out, epochs=1, milestones=[])),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**ENV, "DLAREPRO_LOCK_WAIT_S": "120"})
    try:
        first = proc.stdout.readline()
        assert "waiting up to 120 s" in first and f"pid {holder.pid}" in first
    finally:
        holder.kill()
        holder.wait()
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, first + rest
    assert (out / "metrics.json").is_file()


def test_the_lock_holder_removes_what_killed_writers_left(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    left = [folder / ".checkpoint.pt.node7-123.new", folder / "..checkpoint.pt.node7-123.new.x1.tmp",
            folder / ".metrics.json.ab12.tmp", folder / ".history.csv.cd34.tmp"]
    recent = folder / ".job.json.ef56.tmp"  # submit may be writing this one right now
    for path in left + [recent]:
        path.write_bytes(b"partial")
    lock = runlock.RunLock(folder).acquire()
    try:
        assert not any(p.exists() for p in left) and recent.exists()
        assert runlock.remove_temporaries(folder, now=time.time() + runlock.ABANDONED_AFTER_S + 1) == [recent]
    finally:
        lock.release()


def test_checkpoint_temporaries_are_unique_per_writer(tmp_path, monkeypatch):
    from dlarepro import atomic, checkpoints

    written = []
    monkeypatch.setattr(atomic, "torch_save", lambda obj, path: (written.append(Path(path)), Path(path).write_bytes(b"x")))
    checkpoints.save_checkpoint(tmp_path, {"a": 1})
    import socket

    assert written[0].name == f".checkpoint.pt.{socket.gethostname()}-{os.getpid()}.new"
    assert (tmp_path / "checkpoint.pt").is_file() and not written[0].exists()


# ---------------------------------------------------------------------------------------------
# stop signals: at the next step while training, at once anywhere else


def test_sigterm_outside_training_steps_stops_at_once():
    with StopSignals() as stop:
        stop.in_steps = True
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == signal.SIGTERM  # flagged: the loop checkpoints at the next step
        stop.in_steps = False
        os.kill(os.getpid(), signal.SIGUSR2)  # a warning: still only a flag
        with pytest.raises(Interrupted, match="stopped at once"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)


def test_a_job_cancelled_during_start_up_stops_at_once(data_root, tmp_path):
    """submitit ignores SIGTERM in a job ("Bypassing signal SIGTERM"): a scancel landing before the
    training loop must still stop the job, without writing anything."""
    out = tmp_path / "run"
    config = resolve(tiny(data_root, out, epochs=30, milestones=[20]))
    script = (
        "import json, signal, sys\n"
        "signal.signal(signal.SIGTERM, lambda s, f: print('Bypassing signal SIGTERM', flush=True))  # submitit's\n"
        "from dlarepro.jobs import TrainJob\n"
        "print('ready', flush=True)\n"
        "TrainJob(json.loads(sys.argv[1]))()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # TrainJob has installed its handler and is importing torch / loading data
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    out_text, _ = proc.communicate(timeout=120)
    print(f"start-up cancellation: stopped {time.time() - sent:.2f} s after SIGTERM")
    assert proc.returncode != 0, out_text
    assert "stopped by SIGTERM; stopped at once" in out_text and "Bypassing" not in out_text
    assert not (out / "metrics.json").exists() and not (out / "checkpoint.pt").exists()


# ---------------------------------------------------------------------------------------------
# stale runs: another config or other data is never reported, the old folder is kept


def planned(config: dict) -> RunRecord:
    resolved = resolve(config)
    return RunRecord(identity_of_config(resolved, profile="t"), resolved)


def test_submit_sets_aside_and_retrains_stale_runs(data_root, tmp_path):
    out = tmp_path / "results/t/runs/r"
    done = tmp_path / "results/t/done/r.json"
    assert submit_record(planned(tiny(data_root, out, epochs=1, milestones=[])), executor="debug", done=done) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert json.loads(done.read_text())["config_digest"] == first["config_digest"]
    stamp = (out / "metrics.json").stat().st_mtime_ns
    # unchanged: never trained again
    assert submit_record(planned(tiny(data_root, out, epochs=1, milestones=[])), executor="debug", done=done) == 0
    assert (out / "metrics.json").stat().st_mtime_ns == stamp
    # a recipe value edited in the grid: the folder is moved aside, the run trained again
    assert submit_record(planned(tiny(data_root, out, epochs=1, milestones=[], lr=0.02)), executor="debug") == 0
    aside = list((tmp_path / "results/t/superseded").iterdir())
    assert len(aside) == 1 and "lr: 0.05 -> 0.02" in (aside[0] / "SUPERSEDED.txt").read_text()
    assert json.loads((aside[0] / "metrics.json").read_text()) == first
    second = json.loads((out / "metrics.json").read_text())
    assert second["config_digest"] != first["config_digest"]
    # the data regenerated under the finished run: stale again, retrained on the new data
    write_synthetic_cifar(data_root, "cifar10", n_train=256, n_test=100, seed=1)
    assert submit_record(planned(tiny(data_root, out, epochs=1, milestones=[], lr=0.02)), executor="debug") == 0
    assert len(list((tmp_path / "results/t/superseded").iterdir())) == 2
    third = json.loads((out / "metrics.json").read_text())
    assert third["data"]["fingerprint"] == provenance.fingerprint("cifar10", data_root) != second["data"]["fingerprint"]


def test_neutral_new_keys_do_not_make_runs_stale(monkeypatch):
    from dlarepro import runconfig

    old = {"lr": 0.1, "epochs": 3, "out_dir": "/a"}
    assert freshness.config_changes(old, {**old, "out_dir": "/b"}) == []  # paths do not count
    assert freshness.config_changes(old, {**old, "future": "off"}) == ["future: '<absent>' -> 'off'"]
    monkeypatch.setitem(runconfig.DIGEST_NEUTRAL, "future", "off")
    assert runconfig.config_digest(old) == runconfig.config_digest({**old, "future": "off"})
    assert runconfig.config_digest(old) != runconfig.config_digest({**old, "future": "on"})
    # the speed switches at their defaults are neutral: runs trained before they existed stay fresh
    assert runconfig.config_digest(old) == runconfig.config_digest({**old, **runconfig.SWITCHES})
    assert runconfig.config_digest(old) != runconfig.config_digest({**old, "amp": "bf16"})


def test_a_checkpoint_made_on_other_data_is_not_resumed(data_root, tmp_path):
    out = tmp_path / "run"
    config = tiny(data_root, out)
    proc = subprocess.Popen(training_command("train", config, "log_every=1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV)
    for line in proc.stdout:
        if "epoch 2 batch 2/4" in line:
            proc.send_signal(signal.SIGTERM)
            break
    proc.communicate(timeout=300)
    assert proc.returncode == 3 and (out / "checkpoint.pt").exists()
    write_synthetic_cifar(data_root, "cifar10", n_train=256, n_test=100, seed=1)  # regenerated under the run
    again = subprocess.run(training_command("train", config), capture_output=True, text=True, env=ENV, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "made on other data" in again.stdout and "not resumed" in again.stdout
    aside = list(out.glob("superseded-*/checkpoint.pt"))
    assert len(aside) == 1
    fresh = subprocess.run(training_command("train", tiny(data_root, tmp_path / "fresh")), capture_output=True,
                           text=True, env=ENV, timeout=300)
    assert fresh.returncode == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["weights_sha256"] == json.loads((tmp_path / "fresh/metrics.json").read_text())["weights_sha256"]


# ---------------------------------------------------------------------------------------------
# data provenance


def test_metrics_say_which_data_a_run_used(data_root, tmp_path, monkeypatch):
    synthetic = provenance.describe("cifar10", data_root)
    assert synthetic["source"] == "synthetic" and not provenance.comparable_with_paper(synthetic)
    (data_root / "cifar-10-batches-py/SYNTHETIC").unlink()  # real-looking, but not the official release
    modified = provenance.describe("cifar10", data_root)
    assert modified["source"] == "modified" and "data_batch_1" in modified["detail"]
    assert not provenance.comparable_with_paper(modified)
    ours = provenance.file_digests("cifar10", data_root)
    monkeypatch.setattr(provenance, "official_cifar_md5", lambda dataset: ours)  # as if it were the release
    official = provenance.describe("cifar10", data_root)
    assert official["source"] == "official" and provenance.comparable_with_paper(official)
    assert official["fingerprint"] == modified["fingerprint"] != synthetic["fingerprint"]


# ---------------------------------------------------------------------------------------------
# errors a user can cause: one line, no traceback


def dla(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlarepro", *args], capture_output=True, text=True, cwd=cwd,
                          env=env or ENV, timeout=300)


def one_line_error(done: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


def test_prepare_data_without_internet_is_one_line(tmp_path):
    from conftest import REPO

    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    offline = {**ENV, "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    one_line_error(dla("grid", "prepare-data", "--profile", "paper", "--datasets", "cifar10", cwd=tmp_path,
                       env=offline), 2, "could not download CIFAR-10", "no internet access")


def test_a_cifar_split_without_images_is_named(data_root, tmp_path):
    batch = data_root / "cifar-10-batches-py/test_batch"
    entry = load_pickle(batch)
    entry.update(data=entry["data"][:0], labels=[])
    batch.write_bytes(py2_pickle(entry))  # the release's format: a Python 2 pickle
    one_line_error(dla("train", "--no-progress", *[f"{k}={v}" for k, v in tiny(data_root, tmp_path / "r").items()
                                                   if k != "milestones"], "milestones=[2]"),
                   2, "test split (test_batch) holds no images")


def test_a_coco_category_outside_the_categories_is_named_on_load(tmp_path):
    from dlarepro.data.coco import write_synthetic_coco

    write_synthetic_coco(tmp_path, n_train=4, n_val=2, image_size=64)
    path = tmp_path / "coco/annotations/instances_train2017.json"
    document = json.loads(path.read_text())
    document["annotations"][1]["category_id"] = 99
    path.write_text(json.dumps(document))
    done = dla("data", "check", "--dataset", "coco", "--root", str(tmp_path))
    one_line_error(done, 1, "instances_train2017.json", "category_id 99", "not among the file's categories")


def test_a_truncated_jpeg_is_named_by_data_check_and_by_a_loader_worker(tmp_path):
    import torch

    from dlarepro.data import imagenet_datasets

    root = write_synthetic_imagefolder(tmp_path / "imagenet", n_classes=2, n_train_per_class=3, n_val_per_class=2)
    broken = sorted((root / "train").rglob("*.JPEG"))[2]
    broken.write_bytes(broken.read_bytes()[: len(broken.read_bytes()) // 3])
    one_line_error(dla("data", "check", "--dataset", "imagenet", "--root", str(root)), 1, str(broken))
    train, _ = imagenet_datasets(root, crop_size=32)
    loader = torch.utils.data.DataLoader(train, batch_size=6, num_workers=1)
    with pytest.raises(Exception, match=str(broken)):
        next(iter(loader))


def test_reports_leave_out_stale_runs_and_compare_only_official_data(tmp_path):
    import math

    import pandas as pd

    from dlarepro import grid as gridlib
    from dlarepro.prepare import prepare_data
    from dlarepro.reports import aggregate
    from dlarepro.reports.context import Context
    from dlarepro.reports.steps import run_steps
    from dlarepro.reports.tablekit import NOT_OFFICIAL_MARK, SWITCH_MARK, build_tables

    grid = {"profile": "smoke", "profiles": {"smoke": {
        "recipe": "smoke", "seeds": [0], "data": "synthetic", "synthetic_size": {"n_train": 100, "n_test": 10},
        "depth_map": {20: 11}, "overrides": {"epochs": 1, "milestones": [], "max_batches_per_epoch": 1, "threads": 1}}},
        "experiments": {"table1": [{"datasets": ["cifar10"], "depths": [20], "archs": ["none", "se", "eca"]}]}}
    prepare_data(grid, workdir=tmp_path)
    plan = gridlib.plan(grid, workdir=tmp_path)
    none, se, eca = (plan[f"cifar10-{a}-d11-s0"] for a in ("none", "se", "eca"))
    assert submit_record(none, executor="debug") == 0
    assert submit_record(RunRecord(se.identity, {**se.config, "lr": 0.02}), executor="debug") == 0  # grid edited since
    assert submit_record(eca, executor="debug") == 0
    metrics_path = Path(eca.config["out_dir"]) / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["data"]["source"] = "modified"  # as if trained on CIFAR whose md5 sums differ from the release
    metrics_path.write_text(json.dumps(metrics))
    metrics_path = Path(none.config["out_dir"]) / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    assert metrics["switches"]["amp"] == "off"
    metrics["switches"]["amp"] = "bf16"  # as if trained with autocast on a GPU node
    metrics_path.write_text(json.dumps(metrics))
    ctx = Context("smoke", tmp_path, grid)
    run_steps(ctx, ("aggregate", "claims"), echo=lambda text: None)
    runs = pd.read_csv(tmp_path / "results/smoke/runs.csv")
    problems = pd.read_csv(tmp_path / "results/smoke/problems.csv").set_index("run_id")
    summary = pd.read_csv(tmp_path / "results/smoke/summary.csv").set_index("config_id")
    assert sorted(runs.run_id) == ["cifar10-eca-d11-s0", "cifar10-none-d11-s0"]  # the stale run is not averaged in
    assert problems.loc["cifar10-se-d11-s0", "status"] == "stale"
    assert "lr: 0.02 -> 0.05" in problems.loc["cifar10-se-d11-s0", "detail"]
    assert summary.loc["cifar10-eca-d11", "n_not_official"] == 1
    assert math.isnan(summary.loc["cifar10-eca-d11", "diff_vs_published"])
    assert not math.isnan(summary.loc["cifar10-none-d11", "diff_vs_published"])
    assert summary.loc["cifar10-none-d11", "switches"] == "amp=bf16"
    assert summary["switches"].isna().sum() == 2  # the other configs: defaults (empty)
    # Table 1 marks both rows and says why in its caption
    table = build_tables(ctx, aggregate.read_outputs(ctx))["table1"]
    tex = table.latex(ctx.command_options)
    rows = {}  # label -> its first row (the depth-20 block comes first)
    for line in tex.splitlines():
        if line.count("&") > 5:
            rows.setdefault(line.split("&")[1].strip(), line)
    assert SWITCH_MARK in rows["ResNet-20"] and NOT_OFFICIAL_MARK not in rows["ResNet-20"]
    assert NOT_OFFICIAL_MARK in rows["ECA"] and SWITCH_MARK not in rows["ECA"]
    assert r"non-default speed switches (\texttt{amp=bf16})" in tex and "checksums differ" in tex
