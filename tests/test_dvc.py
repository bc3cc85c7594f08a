"""`dvc repro` drives data -> Snakemake grid -> reports -> paper, offline, in a fresh project copy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
PROJECT_FILES = ["Snakefile", "dvc.yaml", "workflow/rules", "workflow/profiles", "src/dlarepro", ".dvc/config",
                 ".gitignore", ".dvcignore", "environment.yml"]


def sh(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV, timeout=1800)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


@pytest.fixture()
def project(tmp_path) -> Path:
    root = tmp_path / "project"
    for name in PROJECT_FILES:
        src, dst = REPO / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    grid = yaml.safe_load((REPO / "params.yaml").read_text())
    grid["profiles"]["smoke"].update(seeds=[0], synthetic_size={"n_train": 128, "n_test": 50})
    grid["profiles"]["smoke"].pop("skip_experiments", None)  # it names experiments this trimmed grid drops
    grid["experiments"] = {"table1": [{"datasets": ["cifar10"], "depths": [20], "archs": ["none", "dla_l"]}],
                           "figure4": [{"datasets": ["cifar10"], "depths": [20], "archs": ["none", "dla_l"]}]}
    (root / "params.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    sh(root, "git", "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project")
    return root


def test_dvc_repro_end_to_end_then_only_what_a_param_change_touches(project):
    placed = project / "data/smoke/imagenet/train/n0001/big.JPEG"  # a hand-placed file in the data folder
    placed.parent.mkdir(parents=True)
    placed.write_bytes(os.urandom(1 << 20))
    sh(project, "dvc", "repro")
    runs = project / "results/smoke/runs"
    # What DVC cached: metrics, histories, configs, final weights, summaries, tables, figures, paper;
    # never a dataset (a hand-placed ImageNet would be copied) nor a checkpoint or a lock
    cached = cached_files(project)
    assert cached and not [c for c in cached if c.startswith("data/")]
    assert not [c for c in cached if "checkpoint" in c or "/submitit/" in c or c.endswith((".lock", ".tmp"))]
    for run in ("cifar10-none-d11-s0", "cifar10-dla_l-d11-s0"):
        for name in ("metrics.json", "weights.pt", "history.csv", "config.yaml"):
            assert f"results/smoke/runs/{run}/{name}" in cached
    assert {"results/smoke/summary.csv", "reports/smoke/paper.pdf"} <= set(cached)
    assert placed.is_file()
    finished = sorted(p.parent.name for p in runs.glob("*/metrics.json"))
    assert finished == ["cifar10-dla_l-dsu_state_first_image-d11-s0", "cifar10-none-d11-s0"]  # the profile's knobs
    for path in ("reports/smoke/tables/table1.tex", "reports/smoke/figures/figure4.pdf", "reports/smoke/paper.pdf"):
        assert (project / path).is_file(), path
    assert "synthetic" in (project / "reports/smoke/tables/table1.tex").read_text().lower()
    status = sh(project, "dvc", "status")
    assert "up to date" in status.stdout, status.stdout

    before = {p: p.stat().st_mtime_ns for p in runs.glob("*/metrics.json")}
    metrics = sh(project, "dvc", "metrics", "show").stdout
    widest = max(len(line) for line in metrics.splitlines())
    assert "runs_finished" in metrics and "not_reproduced" in metrics and widest <= 130, metrics  # a screen wide

    # A new seed: DVC reruns the grid (Snakemake trains only the new runs) and the reports; the
    # data stage is untouched and no finished run is deleted or retrained.
    grid = yaml.safe_load((project / "params.yaml").read_text())
    grid["profiles"]["smoke"]["seeds"] = [0, 1]
    (project / "params.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    again = sh(project, "dvc", "repro")
    assert "Stage 'data' didn't change" in again.stdout + again.stderr or "data' is cached" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert len(list(runs.glob("*/metrics.json"))) == 4
    assert "up to date" in sh(project, "dvc", "status").stdout

    # Nothing changed: nothing runs, no byte is rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in (project / "reports").rglob("*") if p.is_file()}
    quiet = sh(project, "dvc", "repro")
    assert "didn't change" in quiet.stdout + quiet.stderr
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_dvc_push_and_pull_use_the_local_remote(project, tmp_path):
    sh(project, "dvc", "repro", "data")
    sh(project, "dvc", "push", "data")
    assert any((project / ".dvc-storage").rglob("*")), "the default remote is a folder in the checkout"
    stamps = project / "results/smoke/data"
    shutil.rmtree(stamps)
    sh(project, "dvc", "pull", "data")
    assert json.loads((stamps / "cifar10.json").read_text())["source"] == "synthetic"


def cached_files(project: Path) -> list[str]:
    """Every file path DVC's lock file says it cached (directory outputs listed file by file)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    names = []
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            md5 = out.get("md5", "")
            if md5.endswith(".dir"):
                manifest = project / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
                names += [f"{out['path']}/{entry['relpath']}" for entry in json.loads(manifest.read_text())]
            else:
                names.append(out["path"])
    return names
