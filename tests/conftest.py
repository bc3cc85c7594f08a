"""What several test files share: the command lines of ``dla-repro`` and Snakemake, the
environment they run in (the virtualenv's tools first on PATH) and canned model counts for the tables."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
#: executor options for jobs on the one-node test cluster (workflow/slurm-local)
SLURM_TEST_OPTIONS = ["executor_options={partition: debug, cpus_per_task: 1, mem_gb: 2, gpus_per_node: 1, "
                      "timeout_min: 10, signal_delay_s: 20}", "poll_seconds=1"]


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to test another checkout's code: an editable install made from a second clone that shares
    this virtualenv points ``import dlarepro`` there, and every test would pass or fail on that code."""
    import dlarepro

    where = Path(dlarepro.__file__).resolve()
    if REPO / "src" not in where.parents:
        raise pytest.UsageError(f"dlarepro is imported from {where.parent}, not from this checkout ({REPO / 'src'}); "
                                f"reinstall it here: {sys.executable} -m pip install -e {REPO} --no-deps")


def dla_repro(*args: str, timeout: float = 600, **kw: Any) -> subprocess.CompletedProcess:
    """Run the ``dla-repro`` command (``python -m dlarepro``) and capture its output."""
    return subprocess.run([sys.executable, "-m", "dlarepro", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, **kw)


def training_command(command: str, config: dict[str, Any], *extra: str) -> list[str]:
    """``dla-repro train|detect --no-progress key=value ...`` for ``config``."""
    args = [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in config.items()]
    return [sys.executable, "-m", "dlarepro", command, "--no-progress", *args, *extra]


def snakemake_command(workdir: Path, *args: str, profile: str = "slurm", config: list[str] | None = None,
                      cores: int | None = 4) -> list[str]:
    """``snakemake`` on this repository's Snakefile in ``workdir`` with one of its profiles; the slurm
    profile gets the test cluster's options (plus ``config``)."""
    cmd = ["snakemake", "-s", str(REPO / "Snakefile"), "--profile", str(REPO / "workflow" / "profiles" / profile),
           "--directory", str(workdir), *args]
    if profile == "slurm" and cores:
        cmd += ["--cores", str(cores)]
    options = (SLURM_TEST_OPTIONS if profile == "slurm" else []) + list(config or [])
    if options:
        cmd += ["--config", *options]
    return cmd


def run_snakemake(workdir: Path, *args: str, timeout: float = 900, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_command(workdir, *args, **kw), capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def seconds_per_epoch(grid: dict[str, Any], arch: str, scratch: Path) -> float:
    """How long one training epoch of ``arch`` takes under ``grid``'s profile on this machine, now: the
    median epoch of a 3-epoch run in this process (``scratch``: a folder for its data and run).

    Training time only (no start-up, evaluation or checkpoint), so it errs low, and a test that sizes
    its runs with it errs long: tests that must fault a run while it trains would otherwise hold on
    a fixed epoch count, which a faster machine finishes before the fault comes."""
    import torch
    import yaml

    from dlarepro import grid as gridlib
    from dlarepro.classification.engine import train
    from dlarepro.prepare import prepare_data

    probe = copy.deepcopy(grid)
    probe["profiles"][probe["profile"]]["overrides"].update(epochs=3, milestones=[])
    experiment, entries = next(iter(probe["experiments"].items()))
    probe["experiments"] = {experiment: [{**entries[0], "archs": [arch]}]}
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "params.yaml").write_text(yaml.safe_dump(probe))
    probe = gridlib.load(scratch / "params.yaml")
    prepare_data(probe, workdir=scratch)
    (run_id,) = gridlib.expand(probe)
    config = gridlib.run_record(probe, run_id, workdir=scratch).config
    config["out_dir"] = str(scratch / "run")
    threads = torch.get_num_threads()
    try:
        train(config, progress=False)
    finally:
        torch.set_num_threads(threads)
    with open(scratch / "run" / "history.csv", newline="") as history:
        return statistics.median(float(row["epoch_seconds"]) for row in csv.DictReader(history))


def epochs_lasting(seconds: float, grid: dict[str, Any], arch: str, scratch: Path) -> int:
    """Epochs of ``arch`` under ``grid``'s profile that train for at least ``seconds`` here (see
    :func:`seconds_per_epoch`)."""
    return math.ceil(seconds / seconds_per_epoch(grid, arch, scratch))


def canned_counts():
    """Table model counts with canned ImageNet numbers and parameter check (the real ones build
    ImageNet models and every paper model: seconds per test)."""
    import pandas as pd

    from dlarepro.reports import tablekit

    class CannedCounts(tablekit.ModelCounts):
        def imagenet(self, arch, depth):
            return 25_557_032, 4_089_184_256

        def check(self):
            return pd.DataFrame([dict(table=1, dataset="cifar10", model="ResNet-20", arch="none", depth=20,
                                      knobs="", params=220_378, ours_m=0.22, paper_m=0.22, status="ok", note="")])

    return CannedCounts()


def tiny_config(data_root: Path, out_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A seconds-long CIFAR-10 run: depth 11 (one block per stage), batches of 64, 3 epochs."""
    return {**dict(dataset="cifar10", arch="none", depth=11, data_root=str(data_root), out_dir=str(out_dir),
                   recipe="smoke", epochs=3, milestones=[2], batch_size=64, threads=1, seed=3), **overrides}
