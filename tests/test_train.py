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

from conftest import tiny_config, training_command
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
    """A seconds-long DLA-B run: 4 batches of 64 (256 images), 3 epochs."""
    return tiny_config(data_root, out_dir, **{"arch": "dla_b", **overrides})


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


@pytest.mark.parametrize("arch", ["mrla_b", "dla_b"])
def test_attention_file_says_how_the_scores_vary_across_test_images(data_root, tmp_path, arch):
    """The std of each score across test images and each row's entropy, accumulated batch by batch,
    equal Figure 2's numbers computed directly from every image's scores."""
    from dlarepro.claims import attention_stats, stats_from_file
    from dlarepro.data import CifarDataset, load_cifar

    out = tmp_path / "run"
    train(tiny(data_root, out, dataset="cifar100", arch=arch, depth=29, epochs=1, milestones=[],
               capture_attention=True, test_batch_size=32), progress=False)  # 100 test images: 4 batches
    model = build_model(arch, 29, "cifar100")
    model.load_state_dict(read_checkpoint(out / "checkpoint.pt")["model"])
    model.eval()
    images, labels = load_cifar(data_root, "cifar100", train=False)
    test_set = CifarDataset(images, labels, train=False, seed=3)
    stage = model.stages[2].interaction
    stage.captured = []
    with torch.no_grad():
        model(torch.stack([test_set[i][0] for i in range(len(test_set))]))
    blocks = [s.double().numpy() for s in stage.captured]  # [images, heads, t] per block
    with np.load(out / "attention_stage3.npz") as npz:
        for i, b in enumerate(blocks, start=1):
            assert np.allclose(npz[f"block{i}"], b.mean(0), atol=1e-6)  # the means, as before
            assert np.allclose(npz[f"std_block{i}"], b.std(0), atol=1e-5)
            entropy = -(np.where(b > 0, b * np.log(np.where(b > 0, b, 1)), 0)).sum(-1).mean(0)
            assert np.allclose(npz[f"entropy_block{i}"], entropy, atol=1e-5)
    saved, direct = stats_from_file(out / "attention_stage3.npz"), attention_stats(blocks)
    assert saved == pytest.approx(direct, abs=1e-5)
    assert direct["input_std"] > 0 and 0 < direct["entropy_normalised"] <= 1


# ---------------------------------------------------------------------------------------------
# the final model evaluated again at other test batch sizes (the official code's batch coupling)


def test_final_model_is_evaluated_at_extra_test_batch_sizes(data_root, tmp_path):
    """``eval_batch_sizes`` adds ``final_*_batch<N>``: at the recipe's size it repeats the final
    epoch's evaluation exactly; at size 1 it equals evaluating each test image alone; only a
    ``first_image`` model scores differently at another batch size."""
    import torch.nn.functional as F

    from dlarepro.classification.engine import make_datasets

    gaps = {}
    for dsu_state in ("per_image", "first_image"):
        out = tmp_path / dsu_state
        config = tiny(data_root, out, arch="dla_l", epochs=1, milestones=[], dsu_state=dsu_state,
                      eval_batch_sizes=[1, 7, 100])
        metrics = train(config, progress=False)
        assert metrics["final_top1_batch100"] == metrics["final_top1"]  # the smoke recipe's test batch
        assert metrics["final_test_loss_batch100"] == metrics["final_test_loss"]
        assert {f"final_{m}_batch7" for m in ("top1", "top5", "test_loss")} <= set(metrics)

        model = build_model("dla_l", 11, "cifar10", dsu_state=dsu_state).eval()
        model.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True)["model"])
        _, test_set, _, _ = make_datasets(resolve(config))
        with torch.no_grad():
            alone = [(F.cross_entropy(model(x[None]), torch.tensor([y])).item(), int(model(x[None]).argmax()) == y)
                     for x, y in (test_set[i] for i in range(len(test_set)))]
        assert metrics["final_test_loss_batch1"] == pytest.approx(np.mean([loss for loss, _ in alone]), rel=1e-5)
        assert metrics["final_top1_batch1"] == pytest.approx(100.0 * np.mean([hit for _, hit in alone]))
        gaps[dsu_state] = abs(metrics["final_test_loss_batch1"] - metrics["final_test_loss"])
    assert gaps["per_image"] < 1e-6 and gaps["first_image"] > 2e-5, gaps  # float32 noise vs the coupling


def test_extra_test_batch_sizes_do_not_block_a_resume(data_root, tmp_path):
    """``eval_batch_sizes`` changes no training: a checkpoint written without it resumes with it."""
    out = tmp_path / "run"
    train(tiny(data_root, out, epochs=1, milestones=[]), progress=False)
    (out / "metrics.json").unlink()
    metrics = train(tiny(data_root, out, epochs=1, milestones=[], eval_batch_sizes=[3]), progress=False)
    assert metrics["attempts"] == 2 and "final_top1_batch3" in metrics


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
    ({"eval_batch_sizes": [0]}, "eval_batch_sizes=[0] is invalid"),
    ({"eval_batch_sizes": [4, 4]}, "eval_batch_sizes=[4, 4] is invalid"),
    ({"eval_batch_sizes": 1}, "eval_batch_sizes=1 is invalid"),
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
