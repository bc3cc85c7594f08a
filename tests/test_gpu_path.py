"""The GPU path, checked on the CPU: collectives on the process group's device (gloo here, with a
fake CUDA world for NCCL's rule), per-rank RNG states, the forced one-process distributed path,
the input pipeline (vectorised CIFAR batches and the ImageNet fast path equal the per-sample
reference bit for bit; ``num_workers: auto``) and the speed switches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from dlarepro import distributed as dist_
from dlarepro import speed
from dlarepro.checkpoints import rank_seed, read_checkpoint
from dlarepro.classification.config import ConfigError, resolve
from dlarepro.classification.engine import train
from dlarepro.data import CifarDataset, imagenet_transforms, sample_seed, write_synthetic_cifar, write_synthetic_imagefolder
from dlarepro.data.cifar_batches import CifarBatches, augmentations, generator_matches, per_sample_augmentations

PROBE = REPO / "tests" / "collective_probe.py"


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_synthetic_cifar(root, "cifar10", n_train=128, n_test=40, seed=0)
    return root


def tiny(root: Path, out: Path, **overrides) -> dict:
    config = dict(dataset="cifar10", arch="dla_l", depth=11, data_root=str(root), out_dir=str(out), recipe="smoke",
                  epochs=2, milestones=[1], batch_size=32, test_batch_size=20, max_batches_per_epoch=2, threads=1,
                  seed=3, drop_path=0.2)
    config.update(overrides)
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe(config: dict, tmp: Path, ranks: int, extra_env: dict | None = None) -> list[dict]:
    """Train ``config`` as ``ranks`` processes (env:// like a SLURM job) under the collective probe."""
    (tmp / "config.json").write_text(json.dumps(config))
    port, procs = free_port(), []
    for rank in range(ranks):
        env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
        if ranks > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(ranks), LOCAL_WORLD_SIZE=str(ranks),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, str(PROBE), str(tmp / "config.json"), str(tmp / f"r{rank}.json")],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-4000:]
    return [json.loads((tmp / f"r{rank}.json").read_text()) for rank in range(ranks)]


# ---------------------------------------------------------------------------------------------
# collectives and per-rank randomness


def test_every_collective_tensor_sits_on_the_groups_device(cifar_root, tmp_path):
    records = probe(tiny(cifar_root, tmp_path / "run"), tmp_path, ranks=2)
    for record in records:
        assert record["world_device"] == "cpu"  # gloo: the group's device is the CPU
        names = {c["name"] for c in record["calls"]}
        assert {"all_reduce", "broadcast", "gather_object", "barrier"} <= names
        for call in record["calls"]:
            assert set(call["devices"]) <= {record["world_device"]}, call
            # collectives are called by dlarepro.distributed (or by torch itself, for object collectives)
            assert call["caller"].startswith(("dlarepro.distributed", "torch.")), call
    assert records[0]["weights"] == records[1]["weights"]
    states = read_checkpoint(tmp_path / "run" / "checkpoint.pt")["rng"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])  # drop-path differs


def test_a_nccl_world_builds_its_collective_tensors_on_its_gpu(monkeypatch):
    """NCCL reduces CUDA tensors only: a CUDA world's helpers must create them there (faked here)."""
    made, real = [], torch.tensor

    def tensor(*args, device=None, **kwargs):
        made.append(str(device))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "tensor", tensor)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, op=None: None)
    world = dist_.World(rank=0, size=2, local_rank=1, group=True, device="cuda:1")
    assert dist_.all_sum([1.0, 2.0], world) == [1.0, 2.0]
    assert dist_.any_stop(None, world) is None
    assert made == ["cuda:1", "cuda:1"]
    assert dist_.collective_device("nccl", 1) == f"cuda:{1 % max(torch.cuda.device_count(), 1)}"
    assert dist_.collective_device("gloo", 1) == "cpu"


def test_forced_distributed_path_in_one_process_equals_a_plain_run(cifar_root, tmp_path):
    plain = train(tiny(cifar_root, tmp_path / "plain"), progress=False)
    record, = probe(tiny(cifar_root, tmp_path / "forced", force_distributed=True), tmp_path, ranks=1)
    names = [c["name"] for c in record["calls"]]
    assert {"all_reduce", "broadcast", "gather_object", "barrier"} <= set(names)
    assert record["weights"] == plain["weights_sha256"]
    metrics = json.loads((tmp_path / "forced" / "metrics.json").read_text())
    assert metrics["world_size"] == 1 and metrics["config_digest"] == plain["config_digest"]


def test_rank_seeds_differ_and_leave_rank_0_alone():
    assert len({rank_seed(0, r) for r in range(8)}) == 8
    assert all(0 <= rank_seed(5, r) < 2**32 for r in range(4))


# ---------------------------------------------------------------------------------------------
# the input pipeline


def test_vectorised_draws_equal_the_per_sample_generator():
    assert generator_matches()
    dataset = CifarDataset(np.zeros((1, 32, 32, 3), np.uint8), np.zeros(1, np.int64), train=True, seed=77)
    indices = np.random.default_rng(1).integers(0, 2**40, 300)
    for epoch in (0, 1, 179):
        fast, slow = augmentations(77, epoch, indices), per_sample_augmentations(dataset, epoch, indices)
        assert all(np.array_equal(a, b) for a, b in zip(fast, slow))
    assert 0.4 < fast[2].mean() < 0.6 and set(np.unique(fast[0])) == set(range(9))


@pytest.mark.parametrize("train_split", [True, False])
def test_cifar_batches_equal_the_per_sample_path(cifar_root, train_split):
    from dlarepro.data import load_cifar

    images, labels = load_cifar(cifar_root, "cifar10", train=train_split)
    dataset = CifarDataset(images, labels, train=train_split, seed=9)
    batches = CifarBatches(dataset)
    order = np.random.default_rng(0).permutation(len(dataset)).tolist()
    index_lists = [order[i:i + 24] for i in range(0, len(order), 24)]
    for epoch in (0, 4):
        for (x, y), batch in zip(batches.epoch(epoch, index_lists), index_lists):
            reference = torch.stack([dataset[(epoch, i)][0] for i in batch])
            assert torch.equal(x, reference) and y.tolist() == labels[batch].tolist()


def test_imagenet_fast_path_equals_torchvision_transforms(tmp_path):
    from PIL import Image

    from dlarepro.data import imagenet_datasets

    root = write_synthetic_imagefolder(tmp_path / "inet", n_classes=2, n_train_per_class=3, n_val_per_class=2, size=90)
    train_set, val_set = imagenet_datasets(root, seed=4, crop_size=64)
    reference = imagenet_transforms(train=True, crop_size=64)
    for index in range(len(train_set)):
        x, _ = train_set[(2, index)]
        torch.manual_seed(sample_seed(4, 2, index))  # the global RNG torchvision draws from
        with Image.open(train_set.samples[index][0]) as img:
            assert torch.equal(x, reference(img.convert("RGB")))
    plain = imagenet_transforms(train=False, crop_size=64)
    for index in range(len(val_set)):
        with Image.open(val_set.samples[index][0]) as img:
            assert torch.equal(val_set[index][0], plain(img.convert("RGB")))
    image, _ = train_set.load_uint8((2, 0))
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 64)


def test_num_workers_auto(monkeypatch):
    for name in ("SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert speed.resolve_workers("auto") == 15 and speed.resolve_workers(3) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: four trainers share the mask
    assert speed.resolve_workers("auto") == 3
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setenv("SLURM_TASKS_PER_NODE", "8(x2)")
    assert speed.resolve_workers("auto") == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")  # SLURM's per-task allotment wins
    assert speed.resolve_workers("auto") == 5
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert speed.resolve_workers("auto") == 0  # one CPU: load in the trainer's process


# ---------------------------------------------------------------------------------------------
# switches


def test_switch_defaults_keep_the_paper_setting_and_bad_values_are_named(tmp_path):
    base = tiny(tmp_path, tmp_path / "run")
    config = resolve(base)
    assert (config["amp"], config["compile"], config["deterministic"], config["num_workers"]) == ("off", False, False,
                                                                                                  "auto")
    assert resolve({**base, "amp": False})["amp"] == "off"  # YAML reads `amp: off` as false
    with pytest.raises(ConfigError, match="amp='fp8' is invalid"):
        resolve({**base, "amp": "fp8"})
    with pytest.raises(ConfigError, match="num_workers=-1 is invalid"):
        resolve({**base, "num_workers": -1})


def test_a_default_switch_leaves_the_config_digest_alone(tmp_path):
    from dlarepro.runbase import config_digest

    config = resolve(tiny(tmp_path, tmp_path / "run"))
    older = {k: v for k, v in config.items() if k not in ("amp", "compile", "deterministic")}
    assert config_digest(config) == config_digest(older)
    assert config_digest({**config, "amp": "bf16"}) != config_digest(config)


def test_deterministic_switch_is_applied_and_restored():
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    with speed.determinism(True):
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    with speed.determinism(False):
        assert torch.backends.cudnn.benchmark
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before


def test_bf16_run_records_its_switches(cifar_root, tmp_path):
    metrics = train(tiny(cifar_root, tmp_path / "run", amp="bf16", deterministic=True, epochs=1, milestones=[]),
                    progress=False)
    assert metrics["switches"] == {"amp": "bf16", "compile": False, "deterministic": True, "tails": "auto",
                                   "channels_last": True}
    assert np.isfinite(metrics["final_test_loss"]) and isinstance(metrics["num_workers"], int)
    assert set(metrics["environment_lock"]) == {"file", "sha256", "mismatches"}


def test_the_tails_switch_picks_the_path_and_not_the_numbers(cifar_root, tmp_path):
    """A DLA-L run with the fused tails (run eagerly: no compiler start-up) trains to the same
    weights as one with the op-by-op reference, within float error, and records the switch."""
    runs = {mode: train(tiny(cifar_root, tmp_path / mode, tails=mode, epochs=1, milestones=[]), progress=False)
            for mode in ("reference", "eager")}
    assert runs["eager"]["switches"]["tails"] == "eager"
    weights = {mode: torch.load(tmp_path / mode / "weights.pt", map_location="cpu") for mode in runs}
    weights = {mode: w.get("model", w) for mode, w in weights.items()}
    for name, tensor in weights["reference"].items():
        # two SGD steps amplify float32 reassociation to ~1e-4; a wrong gradient moves weights by lr·g ~ 1e-2
        torch.testing.assert_close(weights["eager"][name], tensor, rtol=1e-3, atol=5e-4)
    assert any(not torch.equal(weights["eager"][n], t) for n, t in weights["reference"].items()), \
        "bit-identical weights: the switch did not change the path"
    with pytest.raises(ConfigError, match="tails='fused' is invalid"):
        train(tiny(cifar_root, tmp_path / "bad", tails="fused"), progress=False)
    assert not (tmp_path / "bad").exists()


def test_fp16_checkpoint_carries_the_grad_scaler(cifar_root, tmp_path):
    out = tmp_path / "run"
    train(tiny(cifar_root, out, amp="fp16", epochs=1, milestones=[], batch_size=4, max_batches_per_epoch=1,
               test_batch_size=40), progress=False)
    scaler = read_checkpoint(out / "checkpoint.pt")["scaler"]
    assert scaler is not None and scaler["scale"] > 0


def test_compile_switch_wraps_the_trained_module(cifar_root, tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or module)
    metrics = train(tiny(cifar_root, tmp_path / "run", compile=True, epochs=1, milestones=[]), progress=False)
    assert len(compiled) == 1 and metrics["switches"]["compile"] is True
