"""``make gpu-check``: is this GPU node ready for the grid? One command, a few minutes on one GPU.

1. steps: one training step of every method at CIFAR depth 56 and ImageNet depth 50, fp32 and bf16:
   ms per step, images/s, the ratio to the plain ResNet of the same depth and precision, peak GPU memory;
2. resume: the code a SLURM job runs (:class:`dlarepro.jobs.TrainJob` in a fresh process, ``env://``
   variables as submitit exports them) trains a few steps with ``deterministic: true``; a second run
   is stopped by SIGTERM mid-epoch and resumed from its checkpoint and must end with the same weights.
   One GPU: a single process forced onto the distributed path (NCCL process group, DDP, every
   collective); two or more: a two-process run;
3. loader: images/s of the input pipelines with ``num_workers: auto`` (synthetic images), and the
   CIFAR batches built on the GPU checked bit for bit against the per-sample CPU path.

Prints a report, writes ``gpu-check.json``; exit status 0 when every check passed, 1 when one failed,
2 when there is no CUDA device. ``--device cpu`` runs the same checks on the CPU (gloo), which is
how the test suite checks this module on machines without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EXIT_NO_CUDA = 2
STEP_SIZES = {"full": {"cifar": (56, 128), "imagenet": (50, 64)}, "quick": {"cifar": (11, 8), "imagenet": (50, 2)}}


def log(message: str) -> None:
    print(f"[gpu-check] {message}", flush=True)


# ------------------------------------------------------------------------------------------------
# 1. one training step of every method


def step_timing(arch: str, dataset: str, depth: int, batch: int, amp: str, device, rounds: int,
                image_size: int) -> dict[str, Any]:
    import torch

    from .bench import StepSetup

    _, step = StepSetup(arch, depth, dataset, batch, device=str(device), amp=amp, image_size=image_size).build()
    cuda = device.type == "cuda"
    for _ in range(2):  # warm-up: cuDNN's algorithm search, allocator growth
        step()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()  # synchronises with the GPU before it returns
        times.append(time.perf_counter() - start)
    ms = sorted(times)[len(times) // 2] * 1000
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return {"arch": arch, "dataset": dataset, "depth": depth, "amp": amp, "batch": batch, "ms_per_step": ms,
            "images_per_s": batch / ms * 1000, "peak_mib": peak}


def check_steps(device, archs: list[str], sizes: dict, rounds: int) -> list[dict[str, Any]]:
    rows = []
    for dataset, (depth, batch) in sizes.items():
        size = 224 if dataset == "imagenet" else 32
        if dataset == "imagenet" and batch <= 2:
            size = 64  # the CPU self-test: the same code on small images
        for amp in ("off", "bf16"):
            for arch in ["none"] + [a for a in archs if a != "none"]:
                row = step_timing(arch, "cifar100" if dataset == "cifar" else "imagenet", depth, batch, amp, device,
                                  rounds, size)
                base = next(r for r in rows + [row] if r["arch"] == "none" and r["dataset"] == row["dataset"]
                            and r["amp"] == amp)
                row["ratio"] = row["ms_per_step"] / base["ms_per_step"]
                rows.append(row)
                log(f"{arch}-{depth} {dataset} {'fp32' if amp == 'off' else amp}: {row['ms_per_step']:.1f} ms/step, "
                    f"{row['images_per_s']:.0f} img/s, x{row['ratio']:.2f} ResNet"
                    + (f", peak {row['peak_mib']:.0f} MiB" if row["peak_mib"] is not None else ""))
    return rows


# ------------------------------------------------------------------------------------------------
# 2. the SLURM job's code: resume equals the uninterrupted run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config: dict[str, Any], processes: int, folder: Path) -> list[subprocess.Popen]:
    """Start ``processes`` fresh interpreters running TrainJob(config) with submitit's env:// variables."""
    path = folder / f"{Path(config['out_dir']).name}.json"
    path.write_text(json.dumps(config))
    port, procs = free_port(), []
    for rank in range(processes):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": str(processes), "LOCAL_WORLD_SIZE": str(processes)}
        procs.append(subprocess.Popen([sys.executable, "-m", "dlarepro.gpucheck", "--job", str(path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float) -> tuple[list[int], str]:
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    return [p.returncode for p in procs], "".join(outs)


def check_resume(device: str, processes: int, folder: Path, timeout: float, quick: bool = False) -> dict[str, Any]:
    from .data import write_synthetic_cifar

    root = folder / "data"
    write_synthetic_cifar(root, "cifar10", n_train=1024, n_test=100, seed=0)
    base = {"dataset": "cifar10", "arch": "dla_l", "depth": 20, "recipe": "smoke", "data_root": str(root),
            "epochs": 2, "milestones": [1], "batch_size": (16 if quick else 64) * processes,
            "max_batches_per_epoch": 3 if quick else 6, "test_batch_size": 50, "seed": 1,
            "drop_path": 0.2, "device": device, "deterministic": True, "force_distributed": True,
            "log_every": 1, "threads": 1 if device == "cpu" else None}
    reference = {**base, "out_dir": str(folder / "reference")}
    codes, out = finish(launch(reference, processes, folder), timeout)
    if any(codes):
        return {"ok": False, "error": f"uninterrupted run failed (exit {codes}): {out[-2000:]}"}
    stopped = {**base, "out_dir": str(folder / "stopped")}
    procs = launch(stopped, processes, folder)
    seen, deadline = "", time.time() + timeout
    while "epoch 2 batch 1/" not in seen and time.time() < deadline and procs[0].poll() is None:
        seen += procs[0].stdout.readline()
    for proc in procs:  # SLURM signals every task of the job
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    codes, out = finish(procs, timeout)
    interrupted = "SIGTERM received: checkpoint written" in seen + out
    codes, out = finish(launch(stopped, processes, folder), timeout)
    if any(codes):
        return {"ok": False, "error": f"resumed run failed (exit {codes}): {out[-2000:]}"}
    metrics = [json.loads((folder / name / "metrics.json").read_text()) for name in ("reference", "stopped")]
    equal = metrics[0]["weights_sha256"] == metrics[1]["weights_sha256"]
    return {"ok": bool(interrupted and equal and metrics[1]["attempts"] == 2), "processes": processes,
            "interrupted_mid_epoch": interrupted, "attempts": metrics[1]["attempts"], "weights_equal": equal,
            "weights_sha256": metrics[1]["weights_sha256"], "device": metrics[1]["device"],
            "world_size": metrics[1]["world_size"], "synthetic": True}


def run_job(config_path: str) -> int:
    """What a SLURM task runs: TrainJob (the exact callable submitit unpickles) on the config."""
    from .jobs import TrainJob
    from .kinds import resolve
    from .runbase import Interrupted

    try:
        TrainJob(resolve(json.loads(Path(config_path).read_text())))()
    except Interrupted as stop:
        print(f"gpu-check job: {stop}", flush=True)
        return 3
    return 0


# ------------------------------------------------------------------------------------------------
# 3. the input pipelines


def check_loader(device, folder: Path, images: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from .data import CifarDataset, imagenet_datasets
    from .data.cifar_batches import CifarBatches
    from .data.loading import image_batches
    from .data.synthetic import write_synthetic_imagefolder
    from .speed import resolve_workers

    workers = resolve_workers("auto")
    rng = np.random.default_rng(0)
    cifar = CifarDataset(rng.integers(0, 256, (4096, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 4096),
                         train=True, seed=0)
    batches = CifarBatches(cifar, device)
    order = [list(range(i, i + 128)) for i in range(0, 4096, 128)]
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    for epoch in range(3):
        for x, _ in batches.epoch(epoch, order):
            pass
    sync()
    cifar_rate = 3 * 4096 / (time.perf_counter() - start)
    x, _ = next(batches.epoch(5, order[:1]))
    exact = torch.equal(x.cpu(), torch.stack([cifar[(5, i)][0] for i in order[0]]))
    root = write_synthetic_imagefolder(folder / "imagenet", n_classes=4, n_train_per_class=images // 4,
                                       n_val_per_class=1, size=400)
    train_set, _ = imagenet_datasets(root, seed=0)
    loader = image_batches(train_set, device, workers)
    index = list(range(len(train_set)))
    lists = [index[i:i + 32] for i in range(0, len(index), 32)]
    next(loader.epoch(0, lists[:1]))  # start the persistent workers outside the timing
    start = time.perf_counter()
    for epoch in (1, 2):
        for _ in loader.epoch(epoch, lists):
            pass
    sync()
    imagenet_rate = 2 * len(index) / (time.perf_counter() - start)
    log(f"loader: num_workers auto = {workers}; CIFAR {cifar_rate:.0f} img/s on {device} (exact: {exact}); "
        f"ImageNet-style JPEGs 400x400 {imagenet_rate:.0f} img/s (synthetic images)")
    return {"ok": bool(exact), "num_workers": workers, "cifar_images_per_s": cifar_rate, "cifar_exact": exact,
            "imagenet_images_per_s": imagenet_rate, "imagenet_image_size": 400, "synthetic": True}


# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu-check.json", help="where to write the JSON report")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: run the checks on the CPU with gloo (the test suite's self-check)")
    parser.add_argument("--quick", action="store_true", help="tiny models and images (the CPU self-check)")
    parser.add_argument("--archs", nargs="+", help="methods to time (default: every method)")
    parser.add_argument("--skip", nargs="+", default=[], choices=["steps", "resume", "loader"])
    parser.add_argument("--job", help=argparse.SUPPRESS)  # internal: one SLURM-like task
    args = parser.parse_args(argv)
    if args.job:
        return run_job(args.job)

    import torch

    from .methods import METHODS

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device is visible (torch.cuda.is_available() is False: no GPU, no driver, "
              f"or a CPU-only torch {torch.__version__}); run it on a GPU node, e.g. "
              "`srun --gpus=1 make gpu-check`", file=sys.stderr)
        return EXIT_NO_CUDA
    device = torch.device(args.device)
    if args.device == "cpu":
        torch.set_num_threads(1)  # the self-check shares its machine with the test suite
    gpus = torch.cuda.device_count() if args.device == "cuda" else 1
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    log(f"device {name} ({gpus} visible), torch {torch.__version__}")
    report: dict[str, Any] = {"device": name, "gpus": gpus, "torch": torch.__version__, "quick": args.quick,
                              "checks": {}}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        checks = {
            "steps": lambda: {"ok": True, "rows": check_steps(device, args.archs or list(METHODS),
                                                              STEP_SIZES["quick" if args.quick else "full"],
                                                              2 if args.quick else 5)},
            "resume": lambda: check_resume(args.device, 2 if gpus >= 2 else 1, Path(tmp), 600, args.quick),
            "loader": lambda: check_loader(device, Path(tmp), 64 if args.quick else 512),
        }
        for check, run in checks.items():
            if check in args.skip:
                continue
            log(f"{check} ...")
            try:
                report["checks"][check] = run()
            except Exception as err:  # a report of every check, whatever breaks
                report["checks"][check] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
            log(f"{check}: {'ok' if report['checks'][check]['ok'] else 'FAILED ' + report['checks'][check].get('error', '')}")
    report["seconds"] = time.time() - started
    report["ok"] = all(c["ok"] for c in report["checks"].values())
    from .atomic import write_json

    write_json(Path(args.out), report)
    log(f"{'all checks passed' if report['ok'] else 'FAILED'} in {report['seconds']:.0f} s; report: {args.out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
