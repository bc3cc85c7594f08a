"""``dla-repro report ... --runs PATH...``: run folders trained by hand are reported like a profile.

``dla-repro train ... out_dir=X`` writes ``run.yaml`` itself (its own depth as the paper depth, no
experiments); the report indexes the folders by it and maps each run onto the paper's rows by what
it trains. The runs here are REAL tiny runs (one batch of one epoch on generated data).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import canned_counts
from dlarepro.cli import main as cli_main
from dlarepro.data import write_synthetic_cifar
from dlarepro.identity import read_run_file
from dlarepro.reports import tablekit
from dlarepro.reports.cli import main as report_main

RUNS = (("none", 0), ("none", 1), ("dla_l", 0))  # CIFAR-100 depth 20: Table 1's ResNet-20 and DLA-L-20 rows


@pytest.fixture(scope="module")
def hand(tmp_path_factory) -> Path:
    """A project folder with three runs trained by hand into results/mine/<arch>-<seed>."""
    root = tmp_path_factory.mktemp("hand")
    write_synthetic_cifar(root / "data", "cifar100", n_train=128, n_test=50, seed=0)
    for arch, seed in RUNS:
        assert cli_main(["train", "--no-progress", "dataset=cifar100", f"arch={arch}", "depth=20", f"seed={seed}",
                         "recipe=smoke", f"data_root={root / 'data'}", f"out_dir={root / 'results/mine'}/{arch}-{seed}",
                         "epochs=1", "milestones=[]", "max_batches_per_epoch=1", "batch_size=16", "threads=1"]) == 0
    return root


@pytest.fixture()
def fake_counts(monkeypatch):
    monkeypatch.setattr(tablekit, "DEFAULT_COUNTS", canned_counts())


def report(root: Path, *args: str) -> int:
    return report_main(["report", *args, "--root", str(root)])


def test_hand_trained_runs_fill_the_paper_rows(hand, fake_counts, capsys):
    record = read_run_file(hand / "results/mine/dla_l-0")
    assert (record.identity.paper_depth, record.identity.experiments) == (20, ())
    assert report(hand, "all", "--runs", str(hand / "results/mine"), "--name", "mine") == 0
    assert "mine: 3 of 3 runs finished, 0 not started, 0 problem(s)" in capsys.readouterr().out

    summary = pd.read_csv(hand / "results/mine/summary.csv", keep_default_na=False).set_index("config_id")
    assert list(summary.index) == ["cifar100-dla_l-d20", "cifar100-none-d20"]
    dla = summary.loc["cifar100-dla_l-d20"]
    assert (dla.n_seeds, dla.n_expected, dla.paper_table, dla.paper_label) == (1, 1, 1, "DLA-L (ours)")
    assert dla.baseline == "cifar100-none-d20" and summary.loc["cifar100-none-d20"].n_seeds == 2
    best = json.loads((hand / "results/mine/dla_l-0/metrics.json").read_text())["best_top1"]

    table1 = (hand / "reports/mine/tables/table1.tex").read_text()
    row = next(line for line in table1.splitlines() if "& DLA-L (ours) &" in line and "textit{not run}" in line)
    cells = [c.strip() for c in row.rstrip("\\").split("&")]
    assert cells[4] == r"\textit{not run}"                         # CIFAR-10: nothing trained
    assert cells[10].replace(r"\textbf{", "").startswith(f"{best:.2f}")  # CIFAR-100: the hand-trained run
    assert "run folders \\texttt{mine}" in table1
    figure4 = pd.read_csv(hand / "results/mine/figure4.csv")
    assert list(zip(figure4.method, figure4.depth, figure4.n)) == [("ResNet", 20, 2), ("DLA-L", 20, 1)]
    paper = (hand / "reports/mine/paper.tex").read_text()
    assert "3 of the 3 runs found in the folders given to \\texttt{--runs}" in paper
    assert (hand / "reports/mine/figures/cost.pdf").is_file()


def test_folders_that_are_not_runs_are_listed(hand, tmp_path, capsys):
    mine = tmp_path / "mine"
    for arch, seed in RUNS:
        shutil.copytree(hand / f"results/mine/{arch}-{seed}", mine / f"{arch}-{seed}")
    shutil.copytree(mine / "none-0", tmp_path / "again")                       # the same run twice
    shutil.copytree(mine / "none-1", mine / "no-record")
    (mine / "no-record" / "run.yaml").unlink()                                  # metrics.json but no run.yaml
    assert report(tmp_path, "aggregate", "--runs", str(mine), str(tmp_path / "again")) == 0
    problems = pd.read_csv(tmp_path / "results/manual/problems.csv")            # the default --name
    assert sorted(zip(problems.run_id, problems.status)) == [("cifar100-none-d20-s0", "duplicate"),
                                                             ("no-record", "corrupt")]
    assert "run.yaml does not exist" in problems.set_index("run_id").loc["no-record", "detail"]
    assert "3 of 3 runs finished, 0 not started, 2 problem(s)" in capsys.readouterr().out


def test_runs_option_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = [(["--runs", str(tmp_path / "nope")], "is not a folder"),
             (["--runs", str(tmp_path / "empty")], "is not a run folder and holds none"),
             (["--runs", str(tmp_path / "empty"), "--profile", "smoke"], "drop --profile"),
             (["--runs", str(tmp_path / "empty"), "--name", "../elsewhere"], "must be one folder name"),
             (["--name", "x"], "--name names a report of --runs folders")]
    for args, message in cases:
        assert report(tmp_path, "aggregate", *args) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    with pytest.raises(SystemExit):
        report_main(["report", "all", "--help"])
    assert "--runs PATH" in capsys.readouterr().out
