"""``dla-repro report claims`` and what the reports build on it: claims.csv and headline.json, the
p columns' partners (comparisons.csv), Figure 2's claim as numbers, the batch-coupling table, the
Claims section of paper.pdf.

The tree is a profile that trains the published rows as the paper profile does
(``knobs: {dsu_state: first_image}``) plus the batch-coupling experiment. Figure 2's and DLA-B's
batch-coupling runs are REAL tiny runs (``dlarepro.classification.engine.train`` on generated
data, one batch of one epoch: their attention files and test-batch evaluations are real); the rows
whose statistics must have known values are hand-written ``metrics.json`` TEST FIXTURES.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from conftest import ENV, canned_counts
from dlarepro import claims
from dlarepro import grid as gridlib
from dlarepro import layout
from dlarepro.identity import write_run_file
from dlarepro.reports import aggregate as agg
from dlarepro.reports import paper_tex, tablekit, verdicts
from dlarepro.reports.cli import main as report_main
from dlarepro.reports.context import Context
from dlarepro.reports.figures import figure2
from dlarepro.reports.rows import model_configs, paper_rows

PROFILE = "claims_test"
FIRST = "dsu_state_first_image"
GRID = {
    "profile": PROFILE,
    "profiles": {PROFILE: {
        "description": "claims test: the published rows trained as the official code does",
        "recipe": "smoke", "seeds": [0, 1, 2, 3, 4], "data": "synthetic",
        "synthetic_size": {"n_train": 128, "n_test": 40},
        "depth_map": {20: 11, 56: 20, 110: 29},
        "overrides": {"epochs": 1, "milestones": [], "max_batches_per_epoch": 1, "batch_size": 16, "threads": 1},
        "knobs": {"dsu_state": "first_image"},
    }},
    "experiments": {
        "table1": [{"datasets": ["cifar100"], "depths": [20, 56], "archs": ["none", "mrla_l", "dla_l"]}],
        "table4": [{"datasets": ["cifar100"], "depths": [110], "archs": ["none"]},
                   {"datasets": ["cifar100"], "depths": [110], "archs": ["dla_l"], "cell": ["rnn", "dsu"]}],
        "figure2": [{"datasets": ["cifar100"], "depths": [56], "archs": ["mrla_b", "dla_b"],
                     "capture_attention": True}],
        "batch_coupling": [
            {"datasets": ["cifar100"], "depths": [56], "archs": ["dla_b", "dla_l"], "dsu_state": ["per_image"]},
            {"datasets": ["cifar100"], "depths": [56], "archs": ["dla_b", "dla_l"], "dsu_state": ["first_image"],
             "eval_batch_sizes": [1, 100]}],
    },
}
# REAL tiny runs: Figure 2 (attention files with per-image statistics) and DLA-B-56 both ways
# (the first_image runs are also evaluated at test batch 1 and 100)
REAL_RUNS = ("cifar100-mrla_b-d20-s0", "cifar100-mrla_b-d20-s1", f"cifar100-dla_b-{FIRST}-d20-s0",
             f"cifar100-dla_b-{FIRST}-d20-s1", "cifar100-dla_b-d20-s0", "cifar100-dla_b-d20-s1")
# TEST FIXTURES: best top-1 per seed 0..4 (final top-1 = best - 1)
FIXTURE_BEST = {
    "cifar100-none-d11": [60.0, 61.5, 59.0, 60.5, 62.0],
    f"cifar100-dla_l-{FIRST}-d11": [65.0, 66.4, 64.1, 65.6, 66.9],      # ResNet-20 + ~5: the stated 4.96
    "cifar100-mrla_l-d11": [63.0, 62.5, 63.5, 62.8, 63.1],
    "cifar100-none-d20": [50.0, 50.5, 49.8, 50.2, 50.1],
    f"cifar100-dla_l-{FIRST}-d20": [57.0, 57.4, 56.9, 57.3, 57.2],       # the published row DLA-L-56
    "cifar100-dla_l-d20": [55.0, 55.5, 54.8, 55.2, 55.1],                # per_image: batch coupling only
    "cifar100-none-d29": [70.0, 70.4, 69.8, 70.2, 70.1],
    f"cifar100-dla_l-cell_rnn-{FIRST}-d29": [66.0, 66.3, 65.8, 66.1, 65.9],  # below ResNet-110
    f"cifar100-dla_l-{FIRST}-d29": [72.0, 72.5, 71.8, 72.3, 72.1],
}
#: the first_image DLA-L-56 fixture at test batch 1 loses this much on its final top-1 (batch 100)
BATCH1_LOSS = [0.3, 0.5, 0.2, 0.6, 0.4]


def fixture_metrics(run: gridlib.Run, best: float, seed: int) -> dict:
    """A complete metrics.json as train() writes it, with made-up numbers (a test fixture)."""
    identity = run.identity(PROFILE)
    metrics = {
        "run": {**identity.to_dict(), "recipe": "smoke"}, "run_id": identity.run_id, "config_id": identity.config_id,
        "final_top1": best - 1.0, "final_top5": best + 20.0, "final_test_loss": 1.5, "best_top1": best,
        "best_top5": best + 21.0, "best_epoch": 1, "epochs": 1, "params": 150_000, "macs": 20_000_000,
        "step_seconds": 0.01, "wall_seconds": 1.0, "attempts": 1, "device": "cpu", "threads": 1,
        "torch_version": "fixture", "git_commit": None, "synthetic": True, "attention_scores": None,
    }
    if run.eval_batch_sizes:
        metrics["final_top1_batch100"] = best - 1.0
        metrics["final_top1_batch1"] = best - 1.0 - BATCH1_LOSS[seed]
    return metrics


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    from dlarepro.classification.engine import train
    from dlarepro.data import write_synthetic_cifar

    root = tmp_path_factory.mktemp("claims")
    (root / "params.yaml").write_text(yaml.safe_dump(GRID, sort_keys=False))
    g = gridlib.load(root / "params.yaml")
    runs = gridlib.expand(g, PROFILE)
    write_synthetic_cifar(root / layout.data_root(PROFILE), "cifar100", n_train=128, n_test=40, seed=0)
    for run_id in REAL_RUNS:
        train(gridlib.run_record(g, run_id, PROFILE, workdir=root).config, progress=False)
    plan = gridlib.plan(g, PROFILE, workdir=root)
    for config_id, values in FIXTURE_BEST.items():
        for seed, best in enumerate(values):
            run = runs[f"{config_id}-s{seed}"]
            folder = root / layout.run_dir(PROFILE, run.run_id)
            folder.mkdir(parents=True)
            write_run_file(folder, plan[run.run_id])
            (folder / "metrics.json").write_text(json.dumps(fixture_metrics(run, best, seed)))
    return root


@pytest.fixture(scope="module")
def ctx(tree) -> Context:
    return Context.load(tree / "params.yaml", None, tree)


@pytest.fixture(scope="module")
def frames(ctx):
    return verdicts.write_claims(ctx, echo=lambda s: None, frames=agg.aggregate(ctx, echo=lambda s: None))


def welch_ci(a, b) -> tuple[float, float, float]:
    """(difference, 95 % Welch interval) of two samples, from scipy (independent of dlarepro.claims)."""
    a, b = np.asarray(a), np.asarray(b)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    diff = a.mean() - b.mean()
    return diff, diff - half, diff + half


# ---------------------------------------------------------------------------------------------
# claims.csv and headline.json


def test_claims_csv_has_the_columns_and_verdicts_of_the_runs(ctx, frames):
    df = pd.read_csv(ctx.results_dir / "claims.csv", keep_default_na=False, na_values=[""])
    for column in ("id", "section", "quote", "stated", "recomputed", "published_holds", "measured", "ci_low",
                   "ci_high", "p_holm", "verdict", "seeds_for_80pct_power"):
        assert column in df.columns, column
    assert len(df) == len(claims.load()) and set(df.verdict) <= set(claims.VERDICTS)
    by_id = df.set_index("id")

    # stated 4.96: DLA-L-20 beats ResNet-20 by ~5 on the fixtures -> reproduced, with scipy's interval
    row = by_id.loc["cifar100-dla-l-vs-resnet-20"]
    diff, low, high = welch_ci(FIXTURE_BEST[f"cifar100-dla_l-{FIRST}-d11"], FIXTURE_BEST["cifar100-none-d11"])
    assert (row.stated, row.recomputed, row.published_holds) == (4.96, 4.96, True)
    assert row.measured == pytest.approx(diff, rel=1e-5)
    assert (row.ci_low, row.ci_high) == (pytest.approx(low, rel=1e-5), pytest.approx(high, rel=1e-5))
    assert row.verdict == "reproduced" and row.p_holm < 0.05 and row.synthetic

    # Table 4's RNN cell is *below* ResNet-110 on the fixtures: the claim it is above is not reproduced
    rnn = by_id.loc["t4-rnn-above-baseline"]
    assert rnn.verdict == "not reproduced" and rnn.ci_high < 0
    assert rnn.measured == pytest.approx(np.mean(FIXTURE_BEST[f"cifar100-dla_l-cell_rnn-{FIRST}-d29"])
                                         - np.mean(FIXTURE_BEST["cifar100-none-d29"]), rel=1e-5)
    assert by_id.loc["abs-sota-imagenet"].verdict == "not run"                  # no ImageNet runs

    # headline.json: runs and claims per verdict, nothing per row
    head = json.loads((ctx.results_dir / "headline.json").read_text())
    expected = {v.replace(" ", "_"): int((df.verdict == v).sum()) for v in claims.VERDICTS}
    assert head == {"runs_finished": len(frames.runs), "runs_expected": len(ctx.index.runs), **expected}
    assert expected["reproduced"] >= 1 and expected["not_reproduced"] >= 1


def test_a_per_image_run_never_enters_a_published_row(ctx, frames):
    """DLA-L-56 is trained both ways (the batch-coupling experiment): the published row, its claims
    and Table 1 use the first_image runs, as the profile's knobs say."""
    assert model_configs(ctx)["cifar100/dla_l/56"] == f"cifar100-dla_l-{FIRST}-d20"
    rows = paper_rows(ctx).set_index(["table", "dataset", "label", "paper_depth"]).config_id
    assert rows[(1, "cifar100", "DLA-L (ours)", 56)] == f"cifar100-dla_l-{FIRST}-d20"
    by_id = frames.claims.set_index("id")
    row = by_id.loc["cifar100-dla-l-vs-resnet-56"]
    ours = FIXTURE_BEST[f"cifar100-dla_l-{FIRST}-d20"]
    assert row.measured == pytest.approx(np.mean(ours) - np.mean(FIXTURE_BEST["cifar100-none-d20"]), rel=1e-5)
    assert f"DLA-L-56: {np.mean(ours):.4g} ± {np.std(ours, ddof=1):.4g} (n = 5)" in row.row_values


def test_without_a_first_image_run_the_published_row_is_not_run(tmp_path):
    grid = {**GRID, "experiments": {
        "table1": [{"datasets": ["cifar100"], "depths": [56], "archs": ["none"]}],
        "batch_coupling": [{"datasets": ["cifar100"], "depths": [56], "archs": ["dla_l"], "dsu_state": ["per_image"]}]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(grid))
    ctx = Context.load(tmp_path / "params.yaml", None, tmp_path)
    assert "cifar100-dla_l-d20" in ctx.index.configs                   # the per_image model is planned
    rows = paper_rows(ctx).set_index(["table", "dataset", "label", "paper_depth"]).config_id
    assert rows[(1, "cifar100", "DLA-L (ours)", 56)] == ""               # ... and fills no published row
    assert "cifar100/dla_l/56" not in model_configs(ctx)


def test_measurements_read_the_in_memory_frame_like_the_csv(ctx, frames):
    """The reports' runs frame holds pd.NA in its whole-number columns; the claims read it as the CSV."""
    assert frames.runs.params.dtype == "Int64" and frames.runs.best_epoch.isna().sum() == 0
    with_na = frames.runs.assign(macs=frames.runs.macs.astype("Int64").mask(frames.runs.index == 0))
    assert with_na.macs.isna().iloc[0]
    from_memory = claims.measurements_from_runs(with_na)
    csv = ctx.results_dir / "runs.csv"
    back = pd.read_csv(csv, keep_default_na=False, na_values=[""], dtype={"knobs": str, "detector": str})
    back.loc[0, "macs"] = np.nan
    assert from_memory == claims.measurements_from_runs(back)


def test_report_claims_command(ctx, frames, capsys):
    args = ["report", "claims", "--grid", str(ctx.root / "params.yaml"), "--root", str(ctx.root)]
    assert report_main(args) == 0
    out = capsys.readouterr().out
    assert "claims.csv unchanged" in out and f"{len(claims.load())} claims:" in out and "SYNTHETIC" in out
    empty = ctx.root / "empty"
    empty.mkdir(exist_ok=True)
    (empty / "params.yaml").write_text(yaml.safe_dump(GRID))
    assert report_main(["report", "claims", "--grid", str(empty / "params.yaml"), "--root", str(empty)]) == 1
    err = capsys.readouterr().err
    assert "report aggregate" in err and err.count("\n") == 1 and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# the p columns: each row against the rows the paper compares it with


def test_comparisons_pair_each_row_with_the_papers_partners(ctx, frames):
    c = frames.comparisons
    t4 = c[c.table == "table4"]
    rnn = t4[t4.label == "Original RNN"].set_index("partner")
    assert list(rnn.index) == ["DSU cell in DLA-L-110", "ResNet-110 (Table 1)"]
    assert rnn.loc["DSU cell in DLA-L-110", "partner_config_id"] == f"cifar100-dla_l-{FIRST}-d29"
    assert rnn.loc["ResNet-110 (Table 1)", "partner_config_id"] == "cifar100-none-d29"
    ours = FIXTURE_BEST[f"cifar100-dla_l-cell_rnn-{FIRST}-d29"]
    p = stats.ttest_ind(ours, FIXTURE_BEST[f"cifar100-dla_l-{FIRST}-d29"], equal_var=False).pvalue
    assert rnn.loc["DSU cell in DLA-L-110", "p_welch"] == pytest.approx(p, rel=1e-6)
    assert t4.p_holm.to_numpy() == pytest.approx(claims.holm(t4.p_welch.to_numpy()), nan_ok=True)
    t1 = c[c.table == "table1"]
    dla56 = t1[(t1.label == "DLA-L (ours)") & (t1.config_id == f"cifar100-dla_l-{FIRST}-d20")]
    assert list(dla56.partner) == ["ResNet-56", "MRLA-L-56"] and dla56.n.tolist() == [5, 5]
    assert dla56.partner_n.tolist() == [5, 0] and math.isnan(dla56.p_welch.iloc[1])   # MRLA-L-56 not run
    # Table 4's p column names each partner with its p-value
    tablekit.write_tables(ctx, counts=canned_counts(), echo=lambda s: None, frames=frames)
    t4_tex = (ctx.reports_dir / "tables" / "table4.tex").read_text()
    line = next(l for l in t4_tex.splitlines() if l.startswith("Original RNN"))
    assert " vs DSU" in line and " vs ResNet" in line and "$^{***}$" in line
    assert "Holm-corrected within the table" in t4_tex and "dsu\\_state=first\\_image" in t4_tex


# ---------------------------------------------------------------------------------------------
# Figure 2 as numbers


def test_figure2_caption_and_claims_give_the_attention_numbers(ctx, frames):
    per_run = {cid: figure2.run_stats(ctx, frames.runs, cid)
               for cid in ("cifar100-mrla_b-d20", f"cifar100-dla_b-{FIRST}-d20")}
    assert [len(v) for v in per_run.values()] == [2, 2]                  # both seeds of each, real files
    runs = frames.runs.set_index("run_id")
    direct = claims.stats_from_file(ctx.index.runs["cifar100-mrla_b-d20-s0"].folder
                                    / runs.loc["cifar100-mrla_b-d20-s0", "attention_scores"])
    assert per_run["cifar100-mrla_b-d20"][0] == direct
    text = figure2.caption_numbers(ctx, frames)
    for name, cid in (("MRLA-B-56", "cifar100-mrla_b-d20"), ("DLA-B-56", f"cifar100-dla_b-{FIRST}-d20")):
        mean, std, n = claims.over_seeds([s["input_std"] for s in per_run[cid]])
        assert f"{name}: score std across test images {mean:.3f} $\\pm$ {std:.3f}" in text and f"({n} seeds)" in text
    tex = paper_tex.paper_tex(ctx, frames)
    assert text in tex.split("\\label{fig:figure2}")[0]
    dynamic = frames.claims.set_index("id").loc["intro-fig2-dla-dynamic"]
    dla, mrla = ([s["input_std"] for s in per_run[c]] for c in (f"cifar100-dla_b-{FIRST}-d20", "cifar100-mrla_b-d20"))
    assert dynamic.measured == pytest.approx(np.mean(dla) - np.mean(mrla), rel=1e-4, abs=1e-9)
    assert f"{np.mean(dla):.4g} ± {np.std(dla, ddof=1):.4g} (n = 2)" in dynamic.row_values


# ---------------------------------------------------------------------------------------------
# Beyond the paper: the batch-coupling table


def test_batch_coupling_table(ctx, frames):
    tablekit.write_tables(ctx, counts=canned_counts(), echo=lambda s: None, frames=frames)
    tex = (ctx.reports_dir / "tables" / "coupling.tex").read_text()
    assert "Beyond the paper: the official code's batch coupling" in tex
    rows = {line.split(" & ")[0]: [c.strip().rstrip("\\").strip() for c in line.split(" & ")]
            for line in tex.splitlines() if line.startswith(("DLA-B-56", "DLA-L-56"))}
    assert list(rows) == ["DLA-B-56", "DLA-L-56"]
    per, first = FIXTURE_BEST["cifar100-dla_l-d20"], FIXTURE_BEST[f"cifar100-dla_l-{FIRST}-d20"]
    dla = rows["DLA-L-56"]
    assert dla[1] == f"{np.mean(per):.2f} $\\pm$ {np.std(per, ddof=1):.2f}"
    assert dla[2] == f"{np.mean(first):.2f} $\\pm$ {np.std(first, ddof=1):.2f}"
    assert dla[3] == f"{np.mean(first) - np.mean(per):.2f}"
    batch100 = np.array(first) - 1.0
    batch1 = batch100 - np.array(BATCH1_LOSS)
    assert dla[5] == f"{batch100.mean():.2f} $\\pm$ {batch100.std(ddof=1):.2f}"
    assert dla[6] == f"{batch1.mean():.2f} $\\pm$ {batch1.std(ddof=1):.2f}"
    assert dla[7] == f"{batch100.mean() - batch1.mean():.2f}"
    lines = frames.comparisons[frames.comparisons.table == "coupling"]
    assert len(lines) == 4                                               # two tests per model
    trained = lines[(lines.label == "DLA-L-56") & (lines.partner_metric == "best_top1")].iloc[0]
    assert trained.p_welch == pytest.approx(stats.ttest_ind(first, per, equal_var=False).pvalue, rel=1e-6)
    tested = lines[(lines.label == "DLA-L-56") & (lines.partner_metric == "final_top1_batch1")].iloc[0]
    assert tested.p_welch == pytest.approx(stats.ttest_ind(batch100, batch1, equal_var=False).pvalue, rel=1e-6)
    assert lines.p_holm.to_numpy() == pytest.approx(claims.holm(lines.p_welch.to_numpy()), nan_ok=True)
    assert dla[4].startswith(f"{trained.p_holm:.3f}" if trained.p_holm >= 0.001 else "$<$0.001")
    # DLA-B-56: real runs; the first_image ones were evaluated again at test batch 1 and 100
    real = frames.runs.set_index("run_id").loc[[f"cifar100-dla_b-{FIRST}-d20-s0", f"cifar100-dla_b-{FIRST}-d20-s1"]]
    assert real.final_top1_batch100.notna().all() and real.final_top1_batch1.notna().all()
    assert rows["DLA-B-56"][5].startswith(f"{real.final_top1_batch100.mean():.2f}")
    assert "Synthetic data" in tex and "Welch" in tex


def test_the_smoke_profile_covers_the_batch_coupling_experiment():
    from conftest import REPO

    g = gridlib.load(REPO / "params.yaml")
    planned = gridlib.plan(g, "smoke")
    coupling = [r for r in planned.values() if "batch_coupling" in r.identity.experiments]
    states = {(r.identity.arch, r.identity.paper_depth, dict(r.identity.knobs).get("dsu_state", "per_image"))
              for r in coupling}
    assert states == {(a, d, s) for a in ("dla_b", "dla_l") for d in (56, 110) for s in ("per_image", "first_image")}
    assert all(r.config.get("eval_batch_sizes") == [1, 100] for r in coupling
               if dict(r.identity.knobs).get("dsu_state") == "first_image")


# ---------------------------------------------------------------------------------------------
# the Claims section of paper.pdf


@pytest.mark.slow
def test_the_claims_section_compiles_into_paper_pdf(ctx, frames, monkeypatch, capsys):
    if shutil.which("pdflatex") is None or shutil.which("pdftotext") is None:
        pytest.fail("pdflatex/pdftotext not found: run scripts/install-latex.sh (as root) to install TeX Live")
    monkeypatch.setattr(tablekit, "DEFAULT_COUNTS", canned_counts())
    assert report_main(["report", "all", "--compile", "--grid", str(ctx.root / "params.yaml"),
                        "--root", str(ctx.root)]) == 0
    out = capsys.readouterr().out
    assert "Overfull" not in out, out                                    # nothing wider than the page
    pdf = ctx.reports_dir / "paper.pdf"
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, env=ENV,
                          check=True).stdout.replace("’", "'")
    assert "The paper's claims" in text and "Claims the paper's own tables contradict" in text
    assert "Beyond the paper: the official code's batch coupling" in text
    failures = claims.failing_published(frames.claims)
    assert f"{len(failures)} of the {len(claims.load())} claims fail the published check" in " ".join(text.split())
    flat = text.replace("\n", " ")
    for f in failures:
        assert f.id in flat, f.id
    assert "reproduced" in text and "not reproduced" in text and "score std across test images" in text
    counts = claims.counts(frames.claims)
    assert (f"Of the paper's {counts['claims']} quantitative claims (Table 8): {counts['reproduced']} reproduced, "
            f"{counts['not reproduced']} not reproduced") in " ".join(text.split())
    tex = (ctx.reports_dir / "tables" / "claims.tex").read_text()
    assert claims.VERDICT_RULES.split(":")[0] in tex and "p\\_holm $<$ 0.05" in tex   # the rules, once, from claims


def test_table2_caption_names_the_dsu_reduction_of_its_runs(tmp_path):
    """The paper's text says 20 on ImageNet, the official code 16 (our default): the caption says
    which one the table's DLA runs train."""
    from dlarepro.reports.registry import tables

    for reduction, words in ((None, "16 (the official code's value and our default)"),
                             (20, "20 (the paper's text; the official code uses 16)")):
        group = {"datasets": ["imagenet"], "depths": [50], "archs": ["dla_l"], "n_seeds": 1}
        grid = {**GRID, "experiments": {"table2": [{**group, **({"reduction": [reduction]} if reduction else {})}]}}
        root = tmp_path / str(reduction)
        root.mkdir()
        (root / "params.yaml").write_text(yaml.safe_dump(grid))
        ctx = Context.load(root / "params.yaml", None, root)
        table = tables()["table2"].build(tablekit.Builder(ctx, agg.aggregate(ctx, echo=lambda s: None), canned_counts()))
        assert f"DSU reduction $r$ of the planned runs: {words}" in table.caption
        assert "dsu\\_state=first\\_image" in table.caption
