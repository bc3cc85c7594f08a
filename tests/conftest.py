"""What several test files share: the command lines of ``dla-repro`` and Snakemake, and the
environment they run in (the virtualenv's tools first on PATH)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
#: executor options for jobs on the one-node test cluster (workflow/slurm-local)
SLURM_TEST_OPTIONS = ["executor_options={partition: debug, cpus_per_task: 1, mem_gb: 2, gpus_per_node: 1, "
                      "timeout_min: 10, signal_delay_s: 20}", "poll_seconds=1"]


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
