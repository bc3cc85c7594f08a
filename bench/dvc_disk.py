"""The disk a `dvc repro` adds, on a profile whose data folder holds a large hand-placed dataset.

Copies the project (Snakefile, dvc.yaml, workflow, package) into a fresh git+DVC folder with a
two-run smoke grid, places ``--data-mb`` of files in ``data/smoke/imagenet/train/`` (standing in
for a hand-placed ImageNet), runs `dvc repro`, and reports the size of DVC's cache next to the
size of the run folders and of the data. Run it against another checkout (``--repo``) to compare.

    python bench/dvc_disk.py [--repo PATH] [--data-mb 512] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

FILES = ["Snakefile", "dvc.yaml", "workflow/rules", "workflow/profiles", "src/dlarepro", ".dvc/config", ".gitignore",
         ".dvcignore", "environment.yml", "params.yaml"]


def size(path: Path) -> int:
    """Bytes of the regular files below ``path`` (links and folders not counted)."""
    if not path.exists():
        return 0
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    return sum(p.stat().st_size for p in files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the checkout whose dvc.yaml and package are measured (default: this one)")
    parser.add_argument("--data-mb", type=int, default=512, help="size of the hand-placed data, MiB (default 512)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="dvc-disk-")) / "project"
    for name in FILES:
        src, dst = args.repo / name, root / name
        if not src.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir()
         else shutil.copy2(src, dst))
    grid = yaml.safe_load((root / "params.yaml").read_text())
    grid["profiles"]["smoke"].update(seeds=[0], synthetic_size={"n_train": 128, "n_test": 50})
    grid["profiles"]["smoke"].pop("skip_experiments", None)
    grid["experiments"] = {"table1": [{"datasets": ["cifar10"], "depths": [20], "archs": ["none", "dla_l"]}]}
    (root / "params.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(root / "src")}

    def run(*cmd: str) -> None:
        done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")

    run("git", "init", "-q")
    run("git", "add", "-A")
    run("git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "p")
    placed = root / "data/smoke/imagenet/train/n01440764"  # placed by hand after the checkout
    placed.mkdir(parents=True)
    for i in range(args.data_mb // 64):
        (placed / f"part{i:03d}.JPEG").write_bytes(os.urandom(64 << 20))
    run("dvc", "repro")
    result = {"repo": str(args.repo), "data_mb": round(size(root / "data") / 2**20, 1),
              "runs_mb": round(size(root / "results/smoke/runs") / 2**20, 2),
              "checkpoints_mb": round(sum(size(p) for p in (root / "results/smoke/runs").rglob("checkpoint*.pt")) / 2**20, 2),
              "dvc_cache_mb": round(size(root / ".dvc/cache") / 2**20, 2)}
    shutil.rmtree(root.parent, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.repo}: dvc repro of 2 smoke runs with {result['data_mb']} MiB of hand-placed data: DVC cache "
              f"{result['dvc_cache_mb']} MiB (run folders {result['runs_mb']} MiB, of which checkpoints "
              f"{result['checkpoints_mb']} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
