"""``dla-repro report``: aggregation, LaTeX tables, figures, the paper and its pdflatex build.

The run tree is built in a temporary folder: a few REAL tiny runs (``dlarepro.classification.engine.train`` on
generated data, one batch of one epoch) plus hand-written ``metrics.json`` TEST FIXTURES where the
statistics need many seeds with known values, plus broken folders (unfinished, corrupt, foreign).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from dlarepro import claims as claims_engine
from dlarepro import grid as gridlib
from dlarepro import layout
from dlarepro import paper
from dlarepro.identity import write_run_file
from dlarepro.reports import aggregate as agg
from dlarepro.reports import figurekit, paper_tex, registry, tablekit, verdicts
from dlarepro.reports.cli import main as report_main
from dlarepro.reports.common import ReportError
from dlarepro.reports.context import Context
from dlarepro.reports.figures import figure2
from dlarepro.reports.latex import tex_escape

PROFILE = "smoke_test"  # an underscore on purpose: it must come out escaped in LaTeX
GRID = {
    "profile": PROFILE,
    "profiles": {
        PROFILE: {
            "description": "test tree: tiny real runs plus hand-written fixtures",
            "recipe": "smoke", "seeds": [0, 1, 2, 3, 4], "data": "synthetic",
            "synthetic_size": {"n_train": 256, "n_test": 100},
            "depth_map": {20: 11, 56: 20, 110: 29},
            "overrides": {"epochs": 1, "milestones": [], "max_batches_per_epoch": 1, "threads": 1},
        },
    },
    "experiments": {
        "table1": [
            {"datasets": ["cifar10", "cifar100"], "depths": [20],
             "archs": ["none", "se", "eca", "dia", "mrla_b", "dla_b", "mrla_l", "dla_l"]},
            {"datasets": ["cifar10", "cifar100"], "depths": [56, 110],
             "archs": ["none", "se", "eca", "dia", "mrla_l", "dla_l"]},
        ],
        "table4": [{"datasets": ["cifar100"], "depths": [110], "archs": ["none"]},
                   {"datasets": ["cifar100"], "depths": [110], "archs": ["dla_l"],
                    "cell": ["rnn", "lstm", "dia", "dsu"]}],
        "table5": [{"datasets": ["cifar100"], "depths": [56, 110], "archs": ["dla_l"],
                    "sigma": ["identity", "tanh", "relu", "sigmoid"]}],
        "table6": [{"datasets": ["cifar100"], "depths": [56, 110], "archs": ["none"]},
                   {"datasets": ["cifar100"], "depths": [56, 110], "archs": ["dia"], "cell": ["lstm", "dia", "dsu"]}],
        "figure2": [{"datasets": ["cifar100"], "depths": [56], "archs": ["mrla_b", "dla_b"],
                     "capture_attention": True}],
        "figure4": [{"datasets": ["cifar10", "cifar100"], "depths": [20, 56, 110],
                     "archs": ["none", "dia", "mrla_l", "dla_l"]}],
        "table2": [{"datasets": ["imagenet"], "depths": [50], "archs": ["none", "dla_l"], "n_seeds": 1}],
        "table3": [{"datasets": ["coco"], "detectors": ["faster_rcnn", "mask_rcnn"], "depths": [50],
                    "archs": ["dla_l"], "n_seeds": 1}],
    },
}
# TEST FIXTURES for Tables 2 and 3: an ImageNet run and a Mask R-CNN run with made-up numbers; the
# Faster R-CNN run has a metrics.json without box AP (corrupt), the ResNet-50 ImageNet run none.
IMAGENET_FIXTURE = ("imagenet-dla_l-d50-s0", 71.25)
# (AP of large objects is null, as COCOeval reports for images without large objects)
COCO_FIXTURE = ("coco-mask_rcnn-dla_l-d50-s0", {"bbox_ap": 12.5, "bbox_ap50": 30.0, "bbox_ap75": 8.25,
                                                "segm_ap": 10.75, "segm_ap50": 20.5, "segm_ap75": 9.5,
                                                "bbox_apl": None, "segm_apl": None})
COCO_CORRUPT = "coco-faster_rcnn-dla_l-d50-s0"


def named(run: gridlib.Run) -> dict:
    """How metrics.json names its run (as every real run writes it)."""
    identity = run.identity(PROFILE)
    return {"run": {**identity.to_dict(), "recipe": "smoke"}, "run_id": identity.run_id,
            "config_id": identity.config_id}


def coco_fixture_metrics(run: gridlib.Run, values: dict) -> dict:
    """A detection metrics.json with made-up numbers (a test fixture)."""
    metrics = {f"{kind}_{m}": 1.0 for kind in ("bbox", "segm") for m in ("ap", "ap50", "ap75", "aps", "apm", "apl")}
    metrics.update(values)
    return {**named(run), "params": 46_900_000, "wall_seconds": 2.0, "synthetic": True, **metrics}

# TEST FIXTURES (hand-written metrics.json): best top-1 per seed 0..4, chosen so that the Welch test
# has a definite answer; final top-1 is best - 1; top-5 is best + 21 at the best epoch, best + 20 at the end.
FIXTURE_BEST = {
    "cifar100-none-d11": [60.0, 61.5, 59.0, 60.5, 62.0],
    "cifar100-dla_l-d11": [64.0, 65.0, 63.5, 66.0, 64.5],
    "cifar100-mrla_l-d11": [62.0, 61.0, 63.0],  # seeds 0-2 only: n differs from the rest
}
REAL_RUNS = ("cifar10-none-d11-s0", "cifar10-none-d11-s1", "cifar100-dla_b-d20-s0")
BROKEN = {
    "cifar10-se-d11-s0": "unfinished",       # history only, no metrics.json
    "cifar10-eca-d11-s0": "corrupt",         # not JSON
    "cifar10-dia-d11-s0": "corrupt",         # a required key missing
    "cifar10-mrla_l-d11-s0": "corrupt",      # describes another run
    "cifar10-none-d11-s9": "not_in_grid",    # seed 9 is not declared
    "cifar100-se-d11-s0": "corrupt",         # its run.yaml names another run
}
PROBLEMS = {**BROKEN, COCO_CORRUPT: "corrupt"}  # what problems.csv must list


def fixture_metrics(run: gridlib.Run, best: float) -> dict:
    """A complete metrics.json as train() writes it, with made-up numbers (a test fixture)."""
    return {
        **named(run),
        "final_top1": best - 1.0, "final_top5": min(100.0, best + 20.0), "final_test_loss": 1.5,
        "best_top1": best, "best_top5": min(100.0, best + 21.0), "best_epoch": 1, "epochs": 1, "params": 150_000 + len(run.arch), "macs": 20_000_000,
        "step_seconds": 0.01 * (1 + len(run.arch)), "wall_seconds": 1.0, "attempts": 1, "device": "cpu",
        "threads": 1, "torch_version": "fixture", "git_commit": None, "synthetic": True,
        "config_digest": "fixture", "attention_scores": None, "weights_sha256": "fixture",
    }


class FakeCounts(tablekit.ModelCounts):
    """Canned ImageNet counts and parameter check (the real ones build ImageNet models: seconds)."""

    def imagenet(self, arch, depth):
        return (25_557_032 + len(arch), 4_089_184_256) if depth == 50 else (44_549_160, 7_801_405_440)

    def check(self):
        return pd.DataFrame([
            dict(table=1, dataset="cifar10", model="ResNet-20", arch="none", depth=20, knobs="", params=220_378,
                 ours_m=0.22, paper_m=0.22, status="ok", note=""),
            dict(table=1, dataset="cifar100", model="DLA-L-56", arch="dla_l", depth=56, knobs="", params=825_840,
                 ours_m=0.83, paper_m=0.82, status="known", note="100% of the_official code: 0.83 M"),
        ])


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    from dlarepro.data import write_synthetic_cifar
    from dlarepro.classification.engine import train

    root = tmp_path_factory.mktemp("project")
    (root / "params.yaml").write_text(yaml.safe_dump(GRID, sort_keys=False))
    g = gridlib.load(root / "params.yaml")
    runs = gridlib.expand(g, PROFILE)
    data = root / layout.data_root(PROFILE)
    for dataset in ("cifar10", "cifar100"):
        write_synthetic_cifar(data, dataset, n_train=256, n_test=100, seed=0)
    for run_id in REAL_RUNS:  # real tiny runs, seconds each
        train(gridlib.run_record(g, run_id, PROFILE, workdir=root).config, progress=False)
    runs_dir = root / layout.results_root(PROFILE) / "runs"
    plan = gridlib.plan(g, PROFILE, workdir=root)

    def fixture_folder(run_id: str) -> Path:
        """A run folder as submission leaves it: run.yaml (the planned record) written first."""
        folder = runs_dir / run_id
        folder.mkdir(parents=True)
        if run_id in plan:
            write_run_file(folder, plan[run_id])
        return folder

    for config_id, values in FIXTURE_BEST.items():
        for seed, best in enumerate(values):
            run = runs[f"{config_id}-s{seed}"]
            (fixture_folder(run.run_id) / "metrics.json").write_text(json.dumps(fixture_metrics(run, best)))
    (fixture_folder(IMAGENET_FIXTURE[0]) / "metrics.json").write_text(
        json.dumps(fixture_metrics(runs[IMAGENET_FIXTURE[0]], IMAGENET_FIXTURE[1])))
    (fixture_folder(COCO_FIXTURE[0]) / "metrics.json").write_text(
        json.dumps(coco_fixture_metrics(runs[COCO_FIXTURE[0]], COCO_FIXTURE[1])))
    broken = coco_fixture_metrics(runs[COCO_CORRUPT], {})
    del broken["bbox_ap"]
    (fixture_folder(COCO_CORRUPT) / "metrics.json").write_text(json.dumps(broken))
    for run_id, status in BROKEN.items():
        folder = fixture_folder(run_id)
        if run_id in runs:
            good = fixture_metrics(runs[run_id], 50.0)
        if run_id == "cifar10-se-d11-s0":
            (folder / "history.csv").write_text("epoch,lr\n")
        elif run_id == "cifar10-eca-d11-s0":
            (folder / "metrics.json").write_text('{"final_top1": 12.0, ')
        elif run_id == "cifar10-dia-d11-s0":
            del good["best_top1"]
            (folder / "metrics.json").write_text(json.dumps(good))
        elif run_id == "cifar10-mrla_l-d11-s0":
            good["run"]["arch"] = "none"
            (folder / "metrics.json").write_text(json.dumps(good))
        elif run_id == "cifar100-se-d11-s0":
            write_run_file(folder, plan["cifar100-se-d20-s0"])
            (folder / "metrics.json").write_text(json.dumps(good))
        else:
            (folder / "metrics.json").write_text(json.dumps(fixture_metrics(runs["cifar10-none-d11-s0"], 99.0)))
    return root


@pytest.fixture(scope="module")
def ctx(tree) -> Context:
    return Context.load(tree / "params.yaml", None, tree)


@pytest.fixture(scope="module")
def built(ctx) -> Context:
    """The tree with aggregate, claims, tables (fake ImageNet counts), figures and paper.tex written."""
    agg.aggregate(ctx, echo=lambda s: None)
    verdicts.write_claims(ctx, echo=lambda s: None)
    tablekit.write_tables(ctx, counts=FakeCounts(), echo=lambda s: None)
    figurekit.write_figures(ctx, echo=lambda s: None)
    paper_tex.write_paper(ctx, echo=lambda s: None)
    return ctx


def read_csv(ctx: Context, name: str) -> pd.DataFrame:
    return pd.read_csv(ctx.results_dir / name, keep_default_na=False, na_values=[""])


# ---------------------------------------------------------------------------------------------
# aggregation


def test_aggregate_counts_and_statistics(ctx):
    result = agg.aggregate(ctx, echo=lambda s: None)
    runs = read_csv(ctx, "runs.csv")
    n_fixtures = sum(len(v) for v in FIXTURE_BEST.values()) + 2  # + the ImageNet and COCO fixtures
    assert len(runs) == result.finished == len(REAL_RUNS) + n_fixtures
    assert sorted(runs.run_id) == sorted(runs.run_id.unique())
    real = runs[runs.run_id.isin(REAL_RUNS)]
    assert len(real) == len(REAL_RUNS) and real.synthetic.all()

    summary = read_csv(ctx, "summary.csv").set_index("config_id")
    assert len(summary) == len(ctx.index.configs)  # every declared config, run or not
    dla, base = FIXTURE_BEST["cifar100-dla_l-d11"], FIXTURE_BEST["cifar100-none-d11"]
    row = summary.loc["cifar100-dla_l-d11"]
    assert row.n_seeds == 5 and row.n_expected == 5 and row.seeds == "0;1;2;3;4"
    assert row.best_top1_mean == pytest.approx(np.mean(dla))
    assert row.best_top1_std == pytest.approx(np.std(dla, ddof=1))
    assert (row.best_top1_min, row.best_top1_max) == (min(dla), max(dla))
    assert row.final_top1_mean == pytest.approx(np.mean(dla) - 1)
    assert row.p_welch == pytest.approx(stats.ttest_ind(dla, base, equal_var=False).pvalue, rel=1e-9)
    assert row.baseline == "cifar100-none-d11" and row.baseline_n == 5
    assert row.delta_vs_baseline == pytest.approx(np.mean(dla) - np.mean(base))
    assert row.paper_table == 1 and row.published_mean == 72.26 and row.published_std == 0.29
    assert row.diff_vs_published == pytest.approx(np.mean(dla) - 72.26)
    assert np.isnan(summary.loc["cifar100-none-d11"].p_welch)               # the baseline itself
    lone = summary.loc["cifar100-dla_b-d20"]                                 # one real seed: no std, no p
    assert lone.n_seeds == 1 and np.isnan(lone.best_top1_std) and np.isnan(lone.p_welch)
    assert summary.loc["cifar10-se-d29"].n_seeds == 0                       # declared, not run
    # Table 4's DSU row and Table 5's sigmoid row are the default DLA-L-110: one config, joined once
    assert summary.loc["cifar100-dla_l-d29"].experiments == "figure4;table1;table4;table5"


def test_problem_folders_are_listed_printed_and_left_out(ctx):
    lines: list[str] = []
    agg.aggregate(ctx, echo=lines.append)
    problems = read_csv(ctx, "problems.csv")
    assert dict(zip(problems.run_id, problems.status)) == PROBLEMS
    details = dict(zip(problems.run_id, problems.detail))
    assert "bbox_ap" in details[COCO_CORRUPT]
    assert "not valid JSON" in details["cifar10-eca-d11-s0"]
    assert "best_top1" in details["cifar10-dia-d11-s0"]
    assert "another run" in details["cifar10-mrla_l-d11-s0"]
    assert "run.yaml describes run 'cifar100-se-d20-s0'" in details["cifar100-se-d11-s0"]
    runs = read_csv(ctx, "runs.csv")
    assert not set(PROBLEMS) & set(runs.run_id)
    summary = read_csv(ctx, "summary.csv").set_index("config_id")
    assert summary.loc["cifar10-none-d11"].n_seeds == 2          # the seed-9 folder is not averaged in
    assert summary.loc["cifar10-eca-d11"].n_seeds == 0
    printed = "\n".join(lines)
    for run_id in PROBLEMS:
        assert run_id in printed


def test_headline_json_is_runs_and_verdicts_and_figure4_csv(ctx):
    """headline.json (DVC metrics) fits on a screen: runs and claims per verdict; the per-row numbers
    are in summary.csv."""
    result = agg.aggregate(ctx, echo=lambda s: None)
    verdicts.write_claims(ctx, echo=lambda s: None)
    head = json.loads((ctx.results_dir / "headline.json").read_text())
    assert (head.pop("runs_finished"), head.pop("runs_expected")) == (result.finished, len(ctx.index.runs))
    assert set(head) == {"reproduced", "not_reproduced", "inconclusive", "not_run"}     # claims per verdict
    assert sum(head.values()) == len(claims_engine.load()) and head["reproduced"] >= 1
    fig4 = read_csv(ctx, "figure4.csv")
    assert list(fig4.columns[:6]) == ["dataset", "method", "arch", "depth", "trained_depth", "n"]
    assert {"mean", "std"} <= set(fig4.columns)
    dla = fig4[(fig4.dataset == "cifar100") & (fig4.method == "DLA-L")].iloc[0]
    assert (dla.depth, dla.trained_depth, dla.n) == (20, 11, 5)


def test_welch_needs_two_seeds_each():
    assert np.isnan(agg.welch_p([1.0], [1.0, 2.0]))
    assert agg.welch_p([1.0, 2.0, 3.0], [2.0, 4.0]) == pytest.approx(
        stats.ttest_ind([1.0, 2.0, 3.0], [2.0, 4.0], equal_var=False).pvalue)


# ---------------------------------------------------------------------------------------------
# tables


def body_rows(tex: str) -> list[list[str]]:
    """The data rows of the (first) tabular: cells split on ' & ', rules skipped."""
    body = tex.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0]
    rows = []
    for line in body.splitlines():
        if not line.strip() or line.startswith(("\\midrule", "\\cmidrule")):
            continue
        rows.append([c.strip() for c in re.split(r"(?<!\\)&", line.rstrip("\\"))])
    return rows


def caption(tex: str) -> str:
    return re.search(r"\\caption\{(.*)\}\n\\label", tex, re.S).group(1)


def test_table1_follows_the_paper(built):
    tex = (built.reports_dir / "tables" / "table1.tex").read_text()
    rows = body_rows(tex)
    published = paper.load_table(1)
    labels = [tex_escape(x) for x in published[published.dataset == "cifar10"].sort_values("row").label]
    assert [r[1] for r in rows] == labels                     # same rows, same order
    assert [r[0] for r in rows if r[0]] == [r"\multirow[c]{8}{*}{20}", r"\multirow[c]{6}{*}{56}",
                                            r"\multirow[c]{6}{*}{110}"]
    assert tex.count("\\midrule") == 3                         # header rule + two rules between depth blocks
    by_label = {r[1]: r for r in rows[:8]}
    # per dataset: #P ours, #P paper, Top-1 ours, Top-1 paper, Final, p (CIFAR-10 from 2, CIFAR-100 from 8)
    se = by_label["SE"]                                         # not run: published value, explicit mark
    assert se[4] == r"\textit{not run}" and se[5] == r"91.29 $\pm$ 0.24" and se[11] == r"68.93 $\pm$ 0.35"
    assert (se[3], se[9]) == ("0.24", "0.27")                   # the paper's #P beside ours
    assert float(se[2]) == pytest.approx(tablekit.DEFAULT_COUNTS.params("se", 11, "cifar10") / 1e6, abs=0.005)
    dla = by_label["DLA-L (ours)"]
    mean, std = np.mean(FIXTURE_BEST["cifar100-dla_l-d11"]), np.std(FIXTURE_BEST["cifar100-dla_l-d11"], ddof=1)
    assert dla[10].startswith(rf"\textbf{{{mean:.2f} $\pm$ {std:.2f}")  # best of the block
    assert by_label["MRLA-L"][10].endswith("{\\scriptsize(n=3)}")  # another number of seeds is marked
    # p: against the ResNet of its depth and (DLA-L) against MRLA-L, Holm-corrected within Table 1
    base, mrla = FIXTURE_BEST["cifar100-none-d11"], FIXTURE_BEST["cifar100-mrla_l-d11"]
    raw = [stats.ttest_ind(dla_v, b, equal_var=False).pvalue for dla_v, b in
           ((FIXTURE_BEST["cifar100-dla_l-d11"], base), (FIXTURE_BEST["cifar100-dla_l-d11"], mrla), (mrla, base))]
    holm = claims_engine.holm(raw)
    cell = lambda p, partner: (f"{p:.3f}" if p >= 0.001 else "$<$0.001") + (
        f"$^{{{claims_engine.stars(p)}}}$" if claims_engine.stars(p) else "") + f" vs {partner}"
    assert dla[13] == (r"\begin{tabular}[c]{@{}r@{}}" + cell(holm[0], "ResNet") + r"\\" + cell(holm[1], "MRLA-L")
                       + r"\end{tabular}")
    assert by_label["MRLA-L"][13] == cell(holm[2], "ResNet")
    assert by_label["ResNet-20"][13] == r"\textit{ref.}" and se[13] == "--"   # the reference; one side not run
    assert all(cell for row in rows for cell in row[1:])       # never an empty cell
    cap = caption(tex)
    assert "over 5 seeds" in cap
    assert "Synthetic data --- pipeline check, not a reproduction" in cap
    assert "rows 20/56/110 trained at depths 11/20/29" in cap
    assert "smoke\\_test" in cap and "best test top-1 over epochs" in cap and "Final" in cap
    assert "the official code's metric" in cap and "never says which epoch" in cap
    assert "Holm-corrected within the table" in cap and "** p $<$ 0.01" in cap
    assert "dsu\\_state=per\\_image" in cap          # this grid trains the paper's equations


def test_every_table_is_complete_and_escaped(built):
    folder = built.reports_dir / "tables"
    assert sorted(p.name for p in folder.iterdir()) == sorted(registry.table_files())
    for name in registry.table_files():
        tex = (folder / name).read_text()
        code = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
        assert "smoke_test" not in code, name                  # underscores escaped outside comments
        assert re.search(r"(?<![\\$])_(?!\{)", code.replace("$_{", "")) is None, name
        if "\\begin{longtable}" not in tex:     # (a cell may hold a tabular of lines: Table 1's p)
            assert tex.count("\\begin{tabular}{") == 1 and "\\toprule" in tex and "\\bottomrule" in tex
            for row in body_rows(tex):
                assert all(row[tex.split("\\begin{tabular}{")[1].count("l") - 1:]), (name, row)
    t2 = (folder / "table2.tex").read_text()
    assert "Paper (quoted)" in t2 and "quotes from each method's original paper" in t2
    rows = {r[1]: r for r in body_rows(t2)[:11]}
    assert rows["CBAM"][2] == r"\textit{n/b}" and rows["CBAM"][4] == r"\textit{not run}"
    assert rows["ResNet-50"][2] == "25.6" and rows["ResNet-50"][3] == "4.09"   # our count (fake here)
    assert rows["DIANet"][7] == "--"                                           # the paper prints '-'
    dla50 = rows["DLA-L (ours)"]
    assert dla50[4] == "71.2" and dla50[5] == "92.2"            # fixture: top-1 and top-5 of the best epoch
    cap2 = caption(t2)
    assert "both from the epoch of the best top-1, the official code's metric" in cap2
    assert "DSU reduction $r$ trained: 16 (the official code's value and our default)" in cap2
    assert "the paper's text gives 20" in cap2
    assert rows["ResNet-50"][4] == r"\textit{not run}"
    t3 = (folder / "table3.tex").read_text()
    assert "Paper (quoted)" in t3 and "mask AP" in t3 and "Synthetic data" in t3
    # every column the paper has, ours beside the paper's: #P, AP, AP50, AP75, then box AP_S/M/L for
    # Faster R-CNN, mask AP/AP50/AP75 for Mask R-CNN
    header = t3.split("\\toprule\n", 1)[1].split("\\midrule", 1)[0]
    for column in ("AP$_{S}$/AP$^{m}$", "AP$_{M}$/AP$^{m}_{50}$", "AP$_{L}$/AP$^{m}_{75}$"):
        assert header.count(column) == 2, column                                # ours and the paper's
    t3_rows = body_rows(t3)
    ours = [r[4:10] for r in t3_rows]
    assert len(t3_rows) == 30 and all(len(r) == 17 for r in t3_rows)
    faster50, _, mask50, mask101 = [o for r, o in zip(t3_rows, ours) if r[2] == "DLA-L (ours)"]
    assert mask50 == ["12.5", "30.0", "8.2", "10.8", "20.5", "9.5"]            # box AP..., then mask AP, 50, 75
    assert mask101 == [r"\textit{not run}"] * 6
    assert faster50 == [r"\textit{not run}"] * 6                              # corrupt run: not averaged
    built = sum(1 for r in paper.load_table(3).itertuples() if r.arch)
    assert sum(o == [r"\textit{not run}"] * 6 for o in ours) == built - 1 == 19
    assert sum(o == [r"\textit{n/b}"] * 6 for o in ours) == 30 - built
    t4 = body_rows((folder / "table4.tex").read_text())
    assert [r[0] for r in t4] == ["Original RNN", "LSTM", "DIA", "DSU"]
    t5 = body_rows((folder / "table5.tex").read_text())
    assert [r[1] for r in t5] == ["Identity mapping", "Tanh", "ReLU", "Sigmoid"] * 2
    t6 = body_rows((folder / "table6.tex").read_text())
    assert [r[1] for r in t6] == ["ResNet-56", "LII (LSTM)", "LII (DIA)", "LII (DSU)",
                                  "ResNet-110", "LII (LSTM)", "LII (DIA)", "LII (DSU)"]
    params = (folder / "params.tex").read_text()
    assert "100\\% of the\\_official code" in params and "known (a)" in params


def test_tables_need_the_aggregate(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(GRID))
    with pytest.raises(ReportError, match="report aggregate"):
        tablekit.write_tables(Context.load(tmp_path / "params.yaml", None, tmp_path), counts=FakeCounts())


def test_meta_device_counts_equal_modelinfo():
    from dlarepro.modelinfo import model_info

    info = model_info("dla_l", 20, "cifar100")
    assert __import__("dlarepro.modelinfo").modelinfo.meta_counts("dla_l", 20, "cifar100") == (info.params, info.macs)


# ---------------------------------------------------------------------------------------------
# figures


def test_figures_exist_and_are_byte_identical_when_regenerated(built):
    folder = built.reports_dir / "figures"
    assert sorted(p.name for p in folder.iterdir()) == sorted(registry.figure_files())
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    shutil.rmtree(folder)
    figurekit.write_figures(built, echo=lambda s: None)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first
    for name, blob in first.items():
        assert blob[:4] in (b"%PDF", b"\x89PNG"), name
        assert b"CreationDate" not in blob and b"Software" not in blob and b"Matplotlib" not in blob, name


def test_figures_say_not_run_without_data(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(GRID))
    empty = Context.load(tmp_path / "params.yaml", None, tmp_path)
    agg.aggregate(empty, echo=lambda s: None)
    written = figurekit.write_figures(empty, echo=lambda s: None)
    assert len(written) == len(registry.figure_files())


def test_figure2_averages_the_seeds_attention(built):
    runs = agg.read_outputs(built).runs
    matrix, n = figure2.attention_means(built, runs, "cifar100-dla_b-d20")
    assert n == 1 and matrix.shape == (2, 2) and np.isnan(matrix[0, 1])
    assert np.nansum(matrix, axis=1) == pytest.approx([1.0, 1.0])   # softmax rows
    assert figure2.attention_means(built, runs, "cifar100-mrla_b-d20") == (None, 0)


# ---------------------------------------------------------------------------------------------
# the whole command: idempotent


def snapshot(ctx: Context) -> dict[str, int]:
    """mtime of every report output (the run folders excluded)."""
    files = [p for p in ctx.results_dir.glob("*") if p.is_file()] + [p for p in ctx.reports_dir.rglob("*")
                                                                      if p.is_file()]
    return {str(p): p.stat().st_mtime_ns for p in files}


def test_report_all_twice_rewrites_nothing(built, capsys, monkeypatch):
    monkeypatch.setattr(tablekit, "DEFAULT_COUNTS", FakeCounts())
    args = ["report", "all", "--grid", str(built.root / "params.yaml"), "--root", str(built.root)]
    assert report_main(args) == 0
    before = snapshot(built)
    assert any(p.endswith("paper.tex") for p in before) and any(p.endswith("summary.csv") for p in before)
    assert report_main(args) == 0
    assert snapshot(built) == before
    out = capsys.readouterr().out
    assert "0 of 9 written" in out and "0 of 6 written" in out and "paper.tex unchanged" in out
    assert "claims.csv unchanged" in out and "headline.json unchanged" in out


def test_paper_tex_includes_every_table_and_figure(built):
    tex = (built.reports_dir / "paper.tex").read_text()
    for name in registry.table_files():
        assert f"\\input{{tables/{name[:-4]}}}" in tex
    for stem in ("figure4", "figure2", "cost"):
        assert f"\\includegraphics[width=\\linewidth]{{figures/{stem}.pdf}}" in tex
    assert "smoke\\_test" in tex and "not a reproduction" in tex
    assert "cifar10-eca-d11-s0" in tex.replace("\\_", "_")       # problems are shown to the reader


def test_cli_help_and_errors(tmp_path, capsys):
    for action in ([], ["aggregate"], ["claims"], ["tables"], ["figures"], ["paper"], ["all"]):
        with pytest.raises(SystemExit) as exit_:
            report_main(["report", *action, "--help"])
        assert exit_.value.code == 0
    assert "--profile" in capsys.readouterr().out
    assert report_main(["report", "aggregate", "--grid", str(tmp_path / "nope.yaml")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(GRID))
    assert report_main(["report", "tables", "--grid", str(tmp_path / "params.yaml"), "--root", str(tmp_path)]) == 1
    assert "report aggregate" in capsys.readouterr().err
    assert report_main(["report", "aggregate", "--grid", str(tmp_path / "params.yaml"), "--profile", "nope"]) == 1


# ---------------------------------------------------------------------------------------------
# pdflatex (needs scripts/install-latex.sh; never skipped)


@pytest.mark.slow
def test_paper_compiles_with_pdflatex_without_errors(built):
    if shutil.which("pdflatex") is None or shutil.which("pdftoppm") is None:
        pytest.fail("pdflatex/pdftoppm not found: run scripts/install-latex.sh (as root) to install TeX Live")
    lines: list[str] = []
    tablekit.write_tables(built, counts=tablekit.ModelCounts(), echo=lines.append)   # the real counts
    pdf = paper_tex.compile_paper(built, echo=lines.append)
    assert pdf.read_bytes()[:4] == b"%PDF"
    assert not [l for l in lines if "Overfull" in l], lines                 # nothing wider than the page
    stamp = pdf.stat().st_mtime_ns
    paper_tex.compile_paper(built, echo=lambda s: None)                       # same sources, same bytes
    assert pdf.stat().st_mtime_ns == stamp
    bad = built.reports_dir / "paper.tex"
    good = bad.read_text()
    try:
        bad.write_text(good.replace("\\end{document}", "\\undefinedcommand\n\\end{document}"))
        with pytest.raises(ReportError, match="Undefined control sequence"):
            paper_tex.compile_paper(built, echo=lambda s: None)
    finally:
        bad.write_text(good)


# ---------------------------------------------------------------------------------------------
# one schema per CSV, one expansion of the grid per report


def test_the_frames_in_memory_equal_the_csvs_read_back(ctx):
    """``report all`` hands the aggregate frames to the tables and figures; ``report tables`` alone
    reads them back: both go through one column schema, so they are the same frames."""
    result = agg.aggregate(ctx, echo=lambda s: None)
    back = agg.read_outputs(ctx)
    for name in ("runs", "summary", "comparisons", "problems"):
        pd.testing.assert_frame_equal(getattr(result, name), getattr(back, name), check_exact=True, obj=name)
    assert result.data.keys() == back.data.keys() == {"figure4.csv"}
    pd.testing.assert_frame_equal(result.data["figure4.csv"], back.data["figure4.csv"], check_exact=True)
    summary = back.summary.set_index("config_id")
    assert summary.params.dtype == "Int64" and pd.isna(summary.loc["cifar10-se-d29", "params"])  # not run: empty
    assert summary.loc["cifar100-none-d11", "paper_table"] == 1 and summary.loc["cifar100-none-d11", "seeds"] == "0;1;2;3;4"
    assert back.runs.synthetic.dtype == bool and back.runs.attention_scores.dtype == back.runs.run_id.dtype


def test_report_all_reads_the_plan_once(built, monkeypatch):
    calls = []
    expand = gridlib.expand
    monkeypatch.setattr(gridlib, "expand", lambda *a, **k: calls.append(a) or expand(*a, **k))
    monkeypatch.setattr(tablekit, "DEFAULT_COUNTS", FakeCounts())
    assert report_main(["report", "all", "--grid", str(built.root / "params.yaml"), "--root", str(built.root)]) == 0
    assert len(calls) == 1
