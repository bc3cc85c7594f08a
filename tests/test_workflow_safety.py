"""What no workflow command may do: delete hand-placed data or finished runs, or let a hostile
string reach a shell, an #SBATCH line or LaTeX. Snakemake runs with the local profile here."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ENV, REPO, run_snakemake
from dlarepro import grid as gridlib
from dlarepro.executors import ExecutorError, make_executor

pytestmark = pytest.mark.slow
HOSTILE = "$(touch pwned) `touch pwned2`; touch pwned3 'q' \"d\""


def test_forced_reruns_never_delete_hand_placed_data_or_finished_runs(tmp_path):
    workdir = tmp_path / "wf"
    grid = {"profile": "real", "profiles": {"real": {"recipe": "smoke", "seeds": [0], "data": "real"}},
            "experiments": {"table2": [{"datasets": ["imagenet"], "depths": [50], "archs": ["none"]}],
                            "table3": [{"datasets": ["coco"], "detectors": ["faster_rcnn"], "depths": [50],
                                        "archs": ["none"]}]}}
    workdir.mkdir()
    (workdir / "params.yaml").write_text(yaml.safe_dump(grid))
    data = workdir / "data/real"
    for args in (["--dataset", "imagenet", "--root", str(data / "imagenet")], ["--dataset", "coco", "--root", str(data)]):
        done = subprocess.run(["dla-repro", "data", "synthetic", *args], env=ENV, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    (data / "imagenet/SYNTHETIC").unlink()  # as if placed by hand: real data the pipeline cannot fetch again
    (data / "coco/SYNTHETIC").unlink()
    placed = [data / "imagenet/train", data / "imagenet/val", data / "coco/annotations/instances_train2017.json",
              data / "coco/train2017"]
    finished = workdir / "results/real/runs/imagenet-none-d50-s0/metrics.json"
    finished.parent.mkdir(parents=True)
    finished.write_text("{}")
    stamps = [workdir / "results/real/data/imagenet.json", workdir / "results/real/data/coco.json"]
    forced = run_snakemake(workdir, "-F", *(str(p.relative_to(workdir)) for p in stamps), profile="local")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert all(p.exists() for p in placed) and finished.exists()
    assert [json.loads(p.read_text())["source"] for p in stamps] == ["unverified", "unverified"]
    again = run_snakemake(workdir, "-R", "prepare_imagenet", "prepare_coco", "--until", "prepare_imagenet",
                          "prepare_coco", profile="local")
    assert again.returncode == 0, again.stdout + again.stderr
    wiped = run_snakemake(workdir, "--delete-all-output", profile="local")
    assert wiped.returncode == 0, wiped.stdout + wiped.stderr
    assert all(p.exists() for p in placed) and finished.exists()
    assert not any(p.exists() for p in stamps)  # the stamps are what Snakemake owns


def test_hostile_paths_run_through_every_shell_line(tmp_path):
    workdir = tmp_path / f"wf {HOSTILE}"
    workdir.mkdir()
    grid = {"profile": "smoke", "profiles": {"smoke": {
        "recipe": "smoke", "seeds": [0], "data": "synthetic", "synthetic_size": {"n_train": 100, "n_test": 10},
        "depth_map": {20: 11}, "overrides": {"epochs": 1, "milestones": [], "max_batches_per_epoch": 1, "threads": 1}}},
        "experiments": {"table1": [{"datasets": ["cifar10"], "depths": [20], "archs": ["none"]}]}}
    (workdir / "params.yaml").write_text(yaml.safe_dump(grid))
    done = subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), "--profile",
                           str(REPO / "workflow/profiles/local"), "runs"], cwd=workdir, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (workdir / "results/smoke/runs/cifar10-none-d11-s0/metrics.json").is_file()
    assert not [p for p in tmp_path.rglob("pwned*")] and not list(Path.cwd().glob("pwned*"))


@pytest.mark.parametrize("name", ["smoke; touch pwned", "$(touch pwned)", "a b", "../x", "-rf"])
def test_hostile_profile_names_are_refused_before_any_shell(tmp_path, name):
    grid = gridlib.load(REPO / "params.yaml")
    grid["profiles"][name] = grid["profiles"]["smoke"]
    grid["profile"] = name
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(grid))
    done = subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), "-n"], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "does not match" in done.stdout + done.stderr
    listed = subprocess.run(["dla-repro", "grid", "list"], cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert listed.returncode == 2 and repr(name)[1:-1] in listed.stderr and "Traceback" not in listed.stderr
    assert not list(tmp_path.glob("pwned*"))


@pytest.mark.parametrize("options", [
    {"partition": "gpu\n#SBATCH --wrap=touch pwned"},
    {"account": "me\r"},
    {"additional_parameters": {"constraint": "a100\n#SBATCH --uid=0"}},
    {"additional_parameters": {"wrap touch pwned": "x"}},
    {"additional_parameters": {"--wrap": "x"}},
])
def test_hostile_executor_options_are_refused_with_their_name(options):
    key = next(iter(options))
    with pytest.raises(ExecutorError, match=f"executor option {key}="):
        make_executor("slurm", options)
    grid = gridlib.load(REPO / "params.yaml")
    grid["executor_options"] = options
    with pytest.raises(gridlib.GridError, match=key):
        gridlib.validate(grid)


def test_dvc_commands_interpolate_nothing():
    """DVC pastes ${...} values into the shell line unquoted: the commands read the profile from
    params.yaml themselves."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages and all("${" not in stage["cmd"] for stage in stages.values())


def test_pdflatex_runs_without_shell_escape(tmp_path, monkeypatch):
    from dlarepro.reports.paper_tex import compile_paper

    real = shutil.which("pdflatex")
    if real is None:
        pytest.fail("pdflatex is not installed (scripts/install-latex.sh)")
    wrapper = tmp_path / "bin/pdflatex"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/bash\necho "$@" >> {tmp_path / "argv.log"}\nexec {real} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "paper.tex").write_text("\\documentclass{article}\\begin{document}"
                                       "\\immediate\\write18{touch pwned}\\immediate\\write18{kpsewhich article.cls > pwned2}"
                                       "x\\end{document}\n")

    class Ctx:
        reports_dir, profile = reports, "t"

    compile_paper(Ctx(), echo=lambda text: None)
    assert (reports / "paper.pdf").is_file() and not list(tmp_path.rglob("pwned*"))
    assert all("-no-shell-escape" in line.split() for line in (tmp_path / "argv.log").read_text().splitlines())


@pytest.mark.parametrize("block", ["", "imagenet", "coco"])
@pytest.mark.parametrize("key,value", [("seed", 0), ("out_dir", "/tmp/one"), ("data_root", "/tmp/d"),
                                       ("dataset", "cifar100"), ("arch", "none"), ("depth", 20),
                                       ("detector", "mask_rcnn"), ("pretrained", "/x"), ("cell", "lstm"),
                                       ("sigma", "tanh"), ("reduction", 8), ("capture_attention", True)])
def test_overrides_cannot_change_what_a_run_is_or_where_it_lives(tmp_path, block, key, value):
    grid = gridlib.load(REPO / "params.yaml")
    profile = grid["profiles"]["tiny" if block else "smoke"]
    target = profile.setdefault(block, {"recipe": block}) if block else profile
    target.setdefault("overrides", {})[key] = value
    with pytest.raises(gridlib.GridError, match=f"profiles/{'tiny' if block else 'smoke'}/"
                                                f"{block + '/' if block else ''}overrides: \\['{key}'\\]"):
        gridlib.validate(grid)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(grid))
    listed = subprocess.run(["dla-repro", "grid", "list"], cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert listed.returncode == 2 and f"['{key}']" in listed.stderr and "Traceback" not in listed.stderr
