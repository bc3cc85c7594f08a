"""``make gpu-check``'s parts that need no GPU: status 2 and a clear message without CUDA, and the
whole check run on the CPU (gloo): step timings, the SLURM job's code resumed to equal weights
through the forced distributed path, the loaders, and the JSON report's shape."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from conftest import ENV, REPO
from dlarepro import gpucheck


def test_without_cuda_it_exits_2_with_a_clear_message(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpucheck.main(["--out", str(tmp_path / "gpu-check.json")]) == gpucheck.EXIT_NO_CUDA
    err = capsys.readouterr().err
    assert "no CUDA device is visible" in err and "Traceback" not in err
    assert not (tmp_path / "gpu-check.json").exists()


def test_the_script_passes_the_exit_status_on(tmp_path):
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu-check.sh"), "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, env={**ENV, "CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr


def test_the_whole_check_on_the_cpu(tmp_path):
    out = tmp_path / "gpu-check.json"
    done = subprocess.run([sys.executable, "-m", "dlarepro.gpucheck", "--device", "cpu", "--quick", "--archs", "none",
                           "dla_l", "--out", str(out)], capture_output=True, text=True, env=ENV, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["ok"] is True and set(report["checks"]) == {"steps", "resume", "loader"}
    rows = report["checks"]["steps"]["rows"]
    assert {(r["arch"], r["dataset"], r["amp"]) for r in rows} == {
        (a, d, p) for a in ("none", "dla_l") for d in ("cifar100", "imagenet") for p in ("off", "bf16")}
    assert all(r["ms_per_step"] > 0 and r["images_per_s"] > 0 for r in rows)
    assert all(r["ratio"] == 1.0 for r in rows if r["arch"] == "none")
    resume = report["checks"]["resume"]
    assert resume["weights_equal"] and resume["interrupted_mid_epoch"] and resume["attempts"] == 2
    assert resume["world_size"] == 1 and resume["synthetic"] is True
    loader = report["checks"]["loader"]
    assert loader["cifar_exact"] is True and loader["num_workers"] >= 0 and loader["imagenet_images_per_s"] > 0
