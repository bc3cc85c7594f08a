"""One training run end to end on generated CIFAR-format data: outputs, resume, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import training_command
from dlarepro.checkpoints import read_checkpoint
from dlarepro.classification.config import ConfigError, resolve
from dlarepro.classification.engine import HISTORY_COLUMNS, train
from dlarepro.data import write_synthetic_cifar
from dlarepro.models import build_model
from dlarepro.runbase import CIRCUMSTANTIAL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_synthetic_cifar(root, "cifar10", n_train=256, n_test=100, seed=0)
    write_synthetic_cifar(root, "cifar100", n_train=300, n_test=100, seed=0)
    return root


def tiny(data_root: Path, out_dir: Path, **overrides) -> dict:
    """A seconds-long run: depth 11 (one block per stage), 4 batches of 64, 3 epochs."""
    config = dict(dataset="cifar10", arch="dla_b", depth=11, data_root=str(data_root), out_dir=str(out_dir),
                  recipe="smoke", epochs=3, milestones=[2], batch_size=64, threads=1, seed=3)
    config.update(overrides)
    return config


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in CIRCUMSTANTIAL}


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_tiny_run_writes_its_folder(data_root, tmp_path, dataset):
    out = tmp_path / "run"
    metrics = train(tiny(data_root, out, dataset=dataset, arch="dla_l", epochs=2, milestones=[1]), progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt", "config.yaml",
                                                    "history.csv", "lock.log", "metrics.json", "run.lock",
                                                    "run.yaml", "weights.pt"]
    assert torch.load(out / "weights.pt", weights_only=True).keys() == build_model("dla_l", 11, dataset).state_dict().keys()
    assert metrics["data"]["source"] == "synthetic" and len(metrics["data"]["fingerprint"]) == 16
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["synthetic"] is True and metrics["epochs"] == 2
    assert metrics["params"] == sum(p.numel() for p in build_model("dla_l", 11, dataset).parameters())
    assert metrics["macs"] > 0 and metrics["step_seconds"] > 0
    lines = (out / "history.csv").read_text().splitlines()
    assert lines[0].split(",") == HISTORY_COLUMNS and len(lines) == 3
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["dataset"] == dataset and config["lr"] == 0.05  # resolved from the smoke recipe


def test_rerunning_a_finished_run_does_nothing(data_root, tmp_path):
    out = tmp_path / "run"
    first = train(tiny(data_root, out, epochs=1, milestones=[]), progress=False)
    stamp = (out / "checkpoint.pt").stat().st_mtime_ns
    assert train(tiny(data_root, out, epochs=1, milestones=[]), progress=False) == first
    assert (out / "checkpoint.pt").stat().st_mtime_ns == stamp


def test_learns_the_synthetic_classes(data_root, tmp_path):
    metrics = train(tiny(data_root, tmp_path / "run", arch="none", epochs=4, milestones=[3]), progress=False)
    assert metrics["best_top1"] > 30.0  # chance is 10 %


# ---------------------------------------------------------------------------------------------
# kill and resume: bit-identical to an uninterrupted run


def cli(config: dict, *extra: str) -> list[str]:
    return training_command("train", config, *extra)


def start_and_stop(config: dict, sig: int, at: str) -> subprocess.CompletedProcess:
    """Start a training subprocess and send ``sig`` once its log shows ``at``."""
    proc = subprocess.Popen(cli(config, "log_every=1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    deadline = time.time() + 300
    for line in proc.stdout:
        seen.append(line)
        if at in line:
            proc.send_signal(sig)
            break
        assert time.time() < deadline, "".join(seen)
    rest, _ = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + rest, "")


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference") / "run"
    done = subprocess.run(cli(tiny(data_root, out)), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("sig,at", [(signal.SIGKILL, "epoch 2 batch 2/4"), (signal.SIGTERM, "epoch 2 batch 1/4"),
                                    (signal.SIGUSR2, "epoch 3 batch 3/4")])
def test_killed_run_resumes_bit_identical(data_root, tmp_path, reference, sig, at):
    out = tmp_path / "run"
    config = tiny(data_root, out)
    stopped = start_and_stop(config, sig, at)
    assert not (out / "metrics.json").exists()
    if sig == signal.SIGKILL:
        assert stopped.returncode == -signal.SIGKILL
    else:  # a checkpoint at the next batch boundary, then exit status 3
        assert stopped.returncode == 3, stopped.stdout
        assert "checkpoint written" in stopped.stdout
        assert read_checkpoint(out / "checkpoint.pt")["batch"] > 0  # mid-epoch
    resumed = subprocess.run(cli(config), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from" in resumed.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["attempts"] == 2
    assert comparable(metrics) | {"config_digest": None} == comparable(reference) | {"config_digest": None}
    assert metrics["weights_sha256"] == reference["weights_sha256"]


def test_corrupt_checkpoint_falls_back_to_the_previous_one(data_root, tmp_path, reference):
    out = tmp_path / "run"
    config = tiny(data_root, out)
    assert start_and_stop(config, signal.SIGTERM, "epoch 3 batch 1/4").returncode == 3
    (out / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes()[:1000])  # truncated
    resumed = subprocess.run(cli(config), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "corrupt checkpoint ignored" in resumed.stdout and "checkpoint.prev.pt" in resumed.stdout
    assert json.loads((out / "metrics.json").read_text())["weights_sha256"] == reference["weights_sha256"]


def test_all_checkpoints_corrupt_restarts_from_scratch(data_root, tmp_path, reference):
    out = tmp_path / "run"
    config = tiny(data_root, out)
    assert start_and_stop(config, signal.SIGTERM, "epoch 2 batch 3/4").returncode == 3
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (out / name).write_bytes(b"not a checkpoint")
    resumed = subprocess.run(cli(config), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "starting from scratch" in resumed.stdout
    assert json.loads((out / "metrics.json").read_text())["weights_sha256"] == reference["weights_sha256"]


def test_checkpoint_of_another_config_is_refused(data_root, tmp_path):
    out = tmp_path / "run"
    train(tiny(data_root, out, epochs=1, milestones=[]), progress=False)
    (out / "metrics.json").unlink()
    with pytest.raises(RuntimeError, match="belongs to a different configuration"):
        train(tiny(data_root, out, epochs=1, milestones=[], lr=0.01), progress=False)


# ---------------------------------------------------------------------------------------------
# attention capture (Figure 2)


@pytest.mark.parametrize("arch", ["mrla_b", "dla_b"])
def test_attention_scores_of_stage_3_are_saved(data_root, tmp_path, arch):
    out = tmp_path / "run"
    metrics = train(tiny(data_root, out, arch=arch, depth=29, epochs=1, milestones=[], capture_attention=True),
                    progress=False)
    assert metrics["attention_scores"] == "attention_stage3.npz"
    scores = np.load(out / "attention_stage3.npz")
    matrix = scores["scores"]  # [block, attended layer], mean over heads and test images
    assert matrix.shape == (3, 3)
    assert np.allclose(np.nansum(matrix, axis=1), 1.0)  # softmax over the layers attended
    assert np.isnan(matrix[0, 1:]).all() and not np.isnan(np.tril(matrix)).any()
    assert scores["block3"].shape == (8, 3)  # 256 channels = 8 heads of 32, three layers


# ---------------------------------------------------------------------------------------------
# bad configurations and data: a clear error before any work, nothing written


BAD_CONFIGS = [
    ({"arch": "dla_x"}, "arch='dla_x' is invalid"),
    ({"dataset": "svhn"}, "dataset='svhn' is invalid"),
    ({"depth": 21}, "must be 9n+2"),
    ({"dataset": "imagenet", "depth": 56}, "ImageNet depth must be one of [50, 101]"),
    ({"lrr": 0.1}, "unknown key 'lrr' (did you mean 'lr'?)"),
    ({"lr": -0.1}, "lr=-0.1 is invalid"),
    ({"epochs": 0}, "epochs=0 is invalid"),
    ({"batch_size": 0}, "batch_size=0 is invalid"),
    ({"milestones": [3, 2]}, "milestones=[3, 2] is invalid"),
    ({"epochs": 2, "milestones": [5]}, "milestones [5] lie beyond epochs=2"),
    ({"arch": "se", "cell": "dsu"}, "se does not take the knob 'cell'"),
    ({"cell": "gru"}, "cell='gru'"),
    ({"sigma": "softplus"}, "sigma='softplus'"),
    ({"drop_path": 1.0}, "drop_path=1.0 is invalid"),
    ({"seed": -1}, "seed=-1 is invalid"),
    ({"device": "tpu"}, "device='tpu' is invalid"),
    ({"recipe": "nope"}, "unknown recipe 'nope'"),
    ({"arch": "dla_l", "capture_attention": True}, "capture_attention is only available"),
    ({"warmup_epochs": 3, "epochs": 3, "milestones": []}, "leaves no training after warm-up"),
    ({"momentum": 1.5}, "momentum=1.5 is invalid"),
    ({"out_dir": None}, "out_dir is required"),
]


@pytest.mark.parametrize("change,message", BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_bad_config_is_rejected_with_its_name(tmp_path, change, message):
    config = {**tiny(tmp_path / "data", tmp_path / "run"), **change}
    with pytest.raises(ConfigError) as err:
        resolve({k: v for k, v in config.items() if v is not None})
    assert message in str(err.value)


def test_every_problem_is_listed_at_once(tmp_path):
    with pytest.raises(ConfigError) as err:
        resolve({"dataset": "cifar10", "arch": "nope", "depth": 20, "epochs": -1, "colour": "red"})
    text = str(err.value)
    for part in ("arch='nope'", "epochs=-1", "unknown key 'colour'", "data_root is required", "out_dir is required"):
        assert part in text


def test_cli_rejects_bad_config_before_any_work(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(cli({"dataset": "cifar10", "arch": "dla_l", "depth": 57, "data_root": str(tmp_path),
                               "out_dir": str(out)}), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "depth must be 9n+2" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_missing_data_names_the_path_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(cli(tiny(tmp_path / "nowhere", out)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in done.stderr
    assert "dla-repro data" in done.stderr  # says how to get the data
    assert not out.exists()


def test_config_file_and_overrides(tmp_path, data_root):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny(data_root, tmp_path / "run")))
    done = subprocess.run([sys.executable, "-m", "dlarepro", "train", "--config", str(path), "lr=0.02",
                           "--print-config"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert resolved["lr"] == 0.02 and resolved["arch"] == "dla_b" and resolved["weight_decay"] == 1e-4
    assert not (tmp_path / "run").exists()


def test_train_help_lists_every_key():
    done = subprocess.run([sys.executable, "-m", "dlarepro", "train", "--help"], capture_output=True, text=True)
    from dlarepro.classification.config import RECIPE_KEYS, RUN_KEYS

    assert all(key in done.stdout for key in {**RECIPE_KEYS, **RUN_KEYS})


def test_history_has_a_step_time_per_epoch(data_root, tmp_path):
    train(tiny(data_root, tmp_path / "run", arch="se", epochs=2, milestones=[1]), progress=False)
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()[1:]
    assert all(float(r.split(",")[-1]) > 0 for r in rows)


def test_outputs_are_written_atomically(tmp_path, monkeypatch):
    """A crash while writing leaves the previous file intact and no temporary files."""
    from dlarepro import atomic

    target = tmp_path / "metrics.json"
    atomic.write_json(target, {"a": 1})

    def boom(fh):
        fh.write(b'{"a": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.write_with(target, boom)
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_checkpoint_loads_with_weights_only(data_root, tmp_path):
    out = tmp_path / "run"
    train(tiny(data_root, out, epochs=1, milestones=[]), progress=False)
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "rng", "epoch", "batch"} <= set(payload)
