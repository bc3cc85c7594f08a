"""The claims engine: claims.yaml validates and resolves, every claim evaluates on the published
tables, the published checks follow the rounding rules, the statistics give known answers, and
verdicts on synthetic seed arrays are the ones the rules imply."""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from conftest import ENV, REPO
from dlarepro import claims, paper
from dlarepro.claims import spec
from dlarepro.claims.quotes import fragments, missing
from dlarepro.claims.stats import (Term, holm, power_equivalent, power_two_sided, seeds_for_power, slope_weights,
                                   stars, welch_contrast)
from dlarepro.yamlfile import parse as parse_yaml


@pytest.fixture(scope="module")
def published() -> pd.DataFrame:
    return claims.evaluate()


def document() -> dict:
    """The packaged claims.yaml as data (a fresh copy to modify)."""
    from importlib import resources

    text = resources.files("dlarepro").joinpath("resources", "paper", "claims.yaml").read_text(encoding="utf-8")
    return parse_yaml(text, "claims.yaml")


def one(**claim) -> dict:
    """A claims document holding the given claims only (defaults as in the packaged file)."""
    doc = document()
    doc["claims"] = list(claim.values())
    return doc


def claim(cid: str, **fields) -> dict:
    base = {"id": cid, "section": "test", "quote": "a quote for a test", "stated": None, "table": 1, "metric": "top1"}
    return {**base, **fields}


DLA_L_56 = {"dataset": "cifar10", "arch": "dla_l", "depth": 56}
RESNET_56 = {"dataset": "cifar10", "arch": "none", "depth": 56}


# ---------------------------------------------------------------------------------------------
# the file


def test_claims_yaml_validates_and_resolves_every_claim():
    loaded = claims.load()
    ids = [c.id for c in loaded]
    assert len(ids) == len(set(ids)) >= 90
    assert all(c.parts for c in loaded)
    kinds = {c.kind for c in loaded}
    assert kinds == set(spec.KINDS)  # every kind of statement occurs in the paper
    assert {c.family for c in loaded} == {"table1", "table2", "table3", "table4", "table5", "table6", "figure2"}
    assert loaded.published_seeds == 5 and len(loaded.not_checkable) >= 3


def test_the_schema_rejects_a_malformed_claim_and_names_it():
    doc = document()
    doc["claims"][0]["kind"] = "bigger"
    doc["claims"][1]["stated"] = 1.6  # a float loses the printed precision: must be the text "1.60"
    del doc["claims"][2]["quote"]
    with pytest.raises(claims.ClaimsError) as err:
        spec.parse(doc, "broken.yaml")
    text = str(err.value)
    assert "broken.yaml does not follow claims.schema.yaml" in text
    assert "claims/0/kind" in text and "claims/1/stated" in text and "claims/2" in text and "'quote'" in text


@pytest.mark.parametrize("bad, message", [
    (claim("x-no-row", kind="greater", a={"arch": "dla_l", "depth": 21}, b={"arch": "none"}),
     "x-no-row: side a matches no row of Table 1"),
    (claim("x-two-rows", kind="difference", stated="1.00", a={"arch": "dla_l"}, b={"arch": "none"}),
     "x-two-rows: a difference claim compares one row with one row"),
    (claim("x-sig-params", kind="significantly_greater", metric="params_m", a=DLA_L_56, b=RESNET_56),
     "x-sig-params: significance needs the printed std"),
    (claim("x-no-column", kind="greater", table=5, metric="params_m", a={"sigma": "tanh"}, b={"sigma": "relu"}),
     "Table 5 has no params_m column"),
    (claim("x-dash", kind="greater", table=2, metric="flops_g", a={"arch": "dla_l", "depth": 50},
           b={"label": "DIANet"}), "the paper prints '-' for flops_g"),
])
def test_claims_that_do_not_match_the_tables_are_refused(bad, message):
    with pytest.raises(claims.ClaimsError, match="do not match the paper's tables") as err:
        spec.parse(one(c=bad), "test.yaml")
    assert message in str(err.value)


def test_duplicate_ids_are_refused():
    c = claim("twice", kind="greater", a=DLA_L_56, b=RESNET_56)
    with pytest.raises(claims.ClaimsError, match="twice: the id is used twice"):
        spec.parse(one(a=c, b=copy.deepcopy(c)), "test.yaml")


def test_quotes_may_render_formulas_and_skip_citations():
    text = "DSU reduces the parameters to 5C2/r5superscript..., which is fewer than 8C2 of LSTM and 10C2/r of DIA."
    quote = "DSU reduces the parameters to [5C²/r], which is fewer than [8C²] of LSTM and [10C²/r] of DIA"
    assert fragments(quote) == ["DSU reduces the parameters to", "which is fewer than", "of LSTM and", "of DIA"]
    assert missing(quote, text) is None
    assert missing("of DIA … DSU reduces", text) == "DSU reduces"  # fragments must come in order
    assert missing("DSU increases the parameters", text) == "DSU increases the parameters"


# ---------------------------------------------------------------------------------------------
# the published checks


def test_every_claim_evaluates_on_the_published_tables(published):
    assert list(published.columns) == list(claims.COLUMNS)
    tables = published[published.family != "figure2"]
    figures = published[published.family == "figure2"]
    assert tables.published_holds.notna().all() and np.isfinite(tables.recomputed).all()
    assert figures.published_holds.isna().all() and figures.recomputed.isna().all()
    assert (published.verdict == "not run").all()  # no runs given
    assert (published.published_arithmetic.str.len() > 20).all()


def test_the_stated_difference_is_checked_against_the_tables(published):
    row = published.set_index("id").loc["cifar100-dla-l-vs-resnet-56"]
    assert row.stated == 2.94 and row.recomputed == pytest.approx(75.46 - 72.32)
    assert not row.published_holds and "75.46 − 72.32 = 3.14; stated 2.94; off by 0.20" in row.published_arithmetic
    assert published.set_index("id").loc["cifar10-dla-l-vs-resnet-56"].published_holds


def test_significance_is_welch_on_the_printed_mean_and_std(published):
    # Table 5, depth 56: Tanh 74.88 ± 0.21 vs Identity mapping 74.63 ± 0.14, five runs each
    expected = sps.ttest_ind_from_stats(74.88, 0.21, 5, 74.63, 0.14, 5, equal_var=False).pvalue
    row = published.set_index("id").loc["t5-activation-significantly-above-identity"]
    assert not row.published_holds
    assert f"p = {expected:.3g}" in row.published_arithmetic


def test_the_failing_published_checks_carry_their_arithmetic(published):
    failures = claims.failing_published(published)
    assert [f.id for f in failures] == list(published[published.published_holds.eq(False)].id)
    assert all(any("FAILS" in line for line in f.arithmetic) for f in failures)
    ids = {f.id for f in failures}
    # the LSTM block of Table 6 is below the plain ResNet; the slopes of Figure 4's data
    assert {"t6-cells-favourable", "fig4-dla-faster-growth", "dsu-formula-vs-dia-t4"} <= ids
    assert "dsu-formula-lstm-vs-dia-t4" not in ids  # the same sentence's LSTM-vs-DIA formula fits the table


@pytest.mark.parametrize("stated, holds", [("1.60", True), ("1.61", True), ("1.62", False), ("1.6", True),
                                           ("1.7", False), ("1.65", False)])
def test_a_difference_holds_within_the_rounding_of_the_printed_numbers(stated, holds):
    # 94.55 − 92.95 = 1.60; tolerance 0.005 + 0.005 + half a unit of the stated number's last digit
    c = claim("d", kind="difference", stated=stated, a=DLA_L_56, b=RESNET_56)
    row = claims.evaluate(spec.parse(one(c=c))).iloc[0]
    assert bool(row.published_holds) is holds


def test_a_printed_tie_holds_for_the_published_numbers_but_not_for_exact_counts():
    # Table 1 prints 0.22 M for both ResNet-20 and ECA-20 on CIFAR-10
    c = claim("tie", kind="greater", metric="params_m", a={"dataset": "cifar10", "arch": "eca", "depth": 20},
              b={"dataset": "cifar10", "arch": "none", "depth": 20})
    cs = spec.parse(one(c=c))
    assert bool(claims.evaluate(cs).iloc[0].published_holds)
    equal = {"cifar10/eca/20": {"params_m": [0.220378]}, "cifar10/none/20": {"params_m": [0.220378]}}
    more = {"cifar10/eca/20": {"params_m": [0.220404]}, "cifar10/none/20": {"params_m": [0.220378]}}
    assert claims.evaluate(cs, equal).iloc[0].verdict == "not reproduced"
    row = claims.evaluate(cs, more).iloc[0]
    assert row.verdict == "reproduced" and row.measured == pytest.approx(0.000026)


# ---------------------------------------------------------------------------------------------
# statistics with known answers


def test_welch_contrast_is_welchs_t_test():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 0.5, 5), rng.normal(0.0, 1.5, 7)
    est = welch_contrast([Term.of(1, a), Term.of(-1, b)])
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert est.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert est.value / est.se == pytest.approx(ref.statistic, rel=1e-10)
    ci = ref.confidence_interval(0.95)
    assert est.ci == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_the_95_percent_interval_covers_the_true_difference_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    covered = 0
    trials = 2000
    for _ in range(trials):
        a, b = rng.normal(0.7, 0.3, 5), rng.normal(0.0, 0.6, 5)
        low, high = welch_contrast([Term.of(1, a), Term.of(-1, b)]).ci
        covered += low <= 0.7 <= high
    print(f"coverage {covered / trials:.3f}")
    assert 0.935 <= covered / trials <= 0.965  # binomial sd at 2000 trials: 0.005


def test_a_slope_contrast_matches_least_squares():
    depths = (20, 56, 110)
    w = slope_weights(depths)
    ys = np.array([92.96, 94.55, 94.66])
    assert w @ ys == pytest.approx(np.polyfit(depths, ys, 1)[0])


def test_holm_adjusts_in_order_and_skips_nan():
    adjusted = holm([0.01, 0.04, 0.03, 0.005, math.nan])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    assert stars(0.0009) == "***" and stars(0.02) == "*" and stars(0.2) == "" and stars(math.nan) == ""


@pytest.mark.parametrize("d, n", [(0.2, 394), (0.5, 64), (0.8, 26), (1.0, 17)])
def test_seeds_for_80_percent_power_match_the_textbook(d, n):
    # two groups, equal stds 1, effect d, two-sided alpha 0.05 (Cohen 1988; statsmodels' TTestIndPower
    # gives 393.4, 63.8, 25.5, 16.7 seeds per group)
    terms = [Term(1, 0, 1, 5), Term(-1, 0, 1, 5)]
    assert seeds_for_power(lambda k: power_two_sided(d, terms, k)) == n
    assert power_two_sided(0.5, terms, 64) == pytest.approx(0.8015, abs=5e-4)


def test_equivalence_power_grows_with_seeds_and_needs_the_effect_inside_the_margin():
    terms = [Term(1, 0, 0.3, 5), Term(-1, 0, 0.3, 5)]
    powers = [power_equivalent(0.1, 0.5, terms, n) for n in (2, 5, 10, 40)]
    assert powers == sorted(powers) and powers[-1] > 0.99
    assert power_equivalent(0.6, 0.5, terms, 1000) < 0.01


# ---------------------------------------------------------------------------------------------
# verdicts on synthetic seed arrays (not results: known answers for the rules)


def seeds(mean: float, sd: float, n: int = 5, seed: int = 0) -> list[float]:
    z = np.random.default_rng(seed).standard_normal(n)
    return list(mean + sd * (z - z.mean()) / z.std(ddof=1))  # exactly this mean and std


def verdict_of(c: dict, measurements: dict) -> pd.Series:
    return claims.evaluate(spec.parse(one(c=c)), measurements).iloc[0]


DIFF = claim("size", kind="difference", stated="1.60", a=DLA_L_56, b=RESNET_56)


@pytest.mark.parametrize("ours, verdict", [
    (1.6, "reproduced"),         # the stated effect, clearly
    (2.5, "reproduced"),         # larger than stated: the sentence still holds
    (0.5, "not reproduced"),     # an effect, but the interval lies below the stated 1.60
    (-1.0, "not reproduced"),    # the other way round
])
def test_a_stated_difference_on_synthetic_seeds(ours, verdict):
    m = {"cifar10/dla_l/56": {"top1": seeds(93.0 + ours, 0.1)}, "cifar10/none/56": {"top1": seeds(93.0, 0.1, seed=1)}}
    row = verdict_of(DIFF, m)
    assert row.measured == pytest.approx(ours)
    assert row.ci_low < ours < row.ci_high
    assert row.verdict == verdict


def test_noise_is_inconclusive_and_a_missing_row_is_not_run():
    # the interval (about ±2.9) holds both 0 and the stated 1.60 (with stds of 1 it would end below 1.60:
    # not reproduced)
    m = {"cifar10/dla_l/56": {"top1": seeds(93.0, 2.0)}, "cifar10/none/56": {"top1": seeds(93.0, 2.0, seed=1)}}
    row = verdict_of(DIFF, m)
    assert row.verdict == "inconclusive" and row.p_holm > 0.05 and row.ci_low < 0 and row.ci_high > 1.6
    del m["cifar10/none/56"]
    row = verdict_of(DIFF, m)
    assert row.verdict == "not run" and "no finished runs of: Table 1, CIFAR-10, ResNet-56" in row.verdict_detail


def test_a_verdict_resting_on_synthetic_runs_says_so():
    m = {"cifar10/dla_l/56": {"top1": seeds(94.6, 0.1), "synthetic": [0.0] * 4 + [1.0]},
         "cifar10/none/56": {"top1": seeds(93.0, 0.1, seed=1)}}
    row = verdict_of(DIFF, m)
    assert row.verdict == "reproduced" and row.synthetic
    assert row.verdict_detail.startswith("SYNTHETIC DATA: a pipeline check, not a reproduction.")
    m["cifar10/dla_l/56"]["synthetic"] = [0.0] * 5
    assert not verdict_of(DIFF, m).synthetic


def test_one_seed_gives_an_estimate_but_no_test():
    m = {"cifar10/dla_l/56": {"top1": [94.5]}, "cifar10/none/56": {"top1": [93.0]}}
    row = verdict_of(DIFF, m)
    assert row.measured == pytest.approx(1.5) and math.isnan(row.ci_low) and row.verdict == "inconclusive"


def test_power_uses_the_published_effect_and_the_observed_spread():
    m = {"cifar10/dla_l/56": {"top1": seeds(94.0, 1.0)}, "cifar10/none/56": {"top1": seeds(93.0, 1.0, seed=1)}}
    row = verdict_of(DIFF, m)
    # published effect 1.60 with stds 1 and 1: d = 1.6
    terms = [Term(1, 0, 1, 5), Term(-1, 0, 1, 5)]
    assert row.seeds_for_80pct_power == seeds_for_power(lambda k: power_two_sided(1.6, terms, k)) == 8


def test_comparable_claims_need_equivalence():
    c = claim("same", kind="comparable", a={"dataset": "cifar10", "arch": "dla_l", "depth": 20},
              b={"dataset": "cifar10", "arch": "none", "depth": 56})
    close = {"cifar10/dla_l/20": {"top1": seeds(93.0, 0.05)}, "cifar10/none/56": {"top1": seeds(93.05, 0.05, seed=1)}}
    far = {"cifar10/dla_l/20": {"top1": seeds(92.0, 0.05)}, "cifar10/none/56": {"top1": seeds(93.0, 0.05, seed=1)}}
    assert verdict_of(c, close).verdict == "reproduced"
    assert verdict_of(c, far).verdict == "not reproduced"


def test_holm_runs_within_a_table_and_a_several_pair_claim_takes_its_weakest_pair():
    strong = claim("strong", kind="greater", a=DLA_L_56, b=RESNET_56)
    weak = claim("weak", kind="greater", a={"dataset": "cifar10", "arch": "dla_l", "depth": 110},
                 b={"dataset": "cifar10", "arch": "none", "depth": 110})
    pair = claim("pair", kind="greater", per=["depth"], a={"dataset": "cifar10", "arch": "dla_l"},
                 b={"dataset": "cifar10", "arch": "none"}, table=1)
    other = claim("other-table", kind="greater", table=4, a={"cell": "dsu"}, b={"cell": "rnn"})
    m = {"cifar10/dla_l/56": {"top1": seeds(94.5, 0.1)}, "cifar10/none/56": {"top1": seeds(93.0, 0.1, seed=1)},
         "cifar10/dla_l/110": {"top1": seeds(93.3, 0.2)}, "cifar10/none/110": {"top1": seeds(93.0, 0.2, seed=1)},
         "cifar10/dla_l/20": {"top1": seeds(93.0, 0.1)}, "cifar10/none/20": {"top1": seeds(91.6, 0.1, seed=1)},
         "cifar100/dla_l/110": {"top1": seeds(76.4, 0.3)}, "cifar100/dla_l/110/cell=rnn": {"top1": seeds(73.6, 0.3)}}
    df = claims.evaluate(spec.parse(one(a=strong, b=weak, c=pair, d=other)), m).set_index("id")
    table1 = df.loc[["strong", "weak", "pair"]]
    assert (table1.p_holm >= table1.p).all()
    assert list(table1.sort_values("p").index) == list(table1.sort_values("p_holm").index)
    assert df.loc["pair", "p"] == pytest.approx(df.loc["weak", "p"])  # the 110 pair is the weakest of three
    assert df.loc["pair", "measured"] == pytest.approx(0.3)
    assert df.loc["other-table", "p_holm"] == df.loc["other-table", "p"]  # alone in its family


def test_figure_claims_and_value_claims():
    fig = {"id": "fig", "section": "t", "quote": "a quote for a test", "stated": None, "kind": "at_most", "figure": 2,
           "metric": "attention_off_peak", "a": {"dataset": "cifar100", "arch": "mrla_b", "depth": 56}, "bound": 0.1}
    row = verdict_of(fig, {"cifar100/mrla_b/56": {"attention_off_peak": seeds(0.03, 0.01)}})
    assert row.verdict == "reproduced" and pd.isna(row.published_holds)
    row = verdict_of(fig, {"cifar100/mrla_b/56": {"attention_off_peak": seeds(0.4, 0.01)}})
    assert row.verdict == "not reproduced"
    value = claim("v", kind="value", table=5, stated="75.46", a={"sigma": "sigmoid", "depth": 56})
    row = verdict_of(value, {"cifar100/dla_l/56": {"top1": seeds(75.5, 0.2)}})
    assert row.measured == pytest.approx(75.5) and row.recomputed == pytest.approx(75.46)


def test_models_we_do_not_build_are_left_out_of_the_measurement():
    c = claim("rlag", kind="greater", table=2, per=["depth"], a={"arch": "dla_l"}, b={"label": ["RLAg", "MRLA-L"]})
    m = {"imagenet/dla_l/50": {"top1": [78.0]}, "imagenet/mrla_l/50": {"top1": [77.7]},
         "imagenet/dla_l/101": {"top1": [78.9]}, "imagenet/mrla_l/101": {"top1": [78.7]}}
    row = verdict_of(c, m)
    assert "not built by this project, left out: Table 2, RLAg-101; Table 2, RLAg-50" in row.verdict_detail
    assert row.verdict == "inconclusive"  # one run per model: no spread
    only_rlag = claim("only", kind="difference", table=2, stated="0.8", a={"arch": "dla_l", "depth": 50},
                      b={"label": "RLAg", "depth": 50})
    assert verdict_of(only_rlag, m).verdict == "not run"


# ---------------------------------------------------------------------------------------------
# outputs


def test_claims_csv_is_written_atomically_and_only_when_it_changes(tmp_path, published):
    path = tmp_path / "out" / "claims.csv"
    assert claims.write_csv(published, path) is True
    assert claims.write_csv(published, path) is False
    back = pd.read_csv(path, keep_default_na=False, dtype=str)
    assert list(back.columns) == list(claims.COLUMNS) and len(back) == len(published)
    assert set(back.published_holds) == {"true", "false", ""} and set(back.synthetic) == {"false"}
    assert not list(path.parent.glob(".*tmp"))


def test_the_claims_section_data(published):
    section = claims.section_data(published)
    assert section["counts"]["claims"] == len(published) and section["counts"]["not run"] == len(published)
    assert section["counts"]["published_fails"] == len(section["failures"])
    assert "reproduced: p_holm < 0.05" in section["rules"] and "not run:" in section["rules"]
    assert "reproduced:" in claims.DECISION_RULES and "Published check" in claims.DECISION_RULES


def test_the_readme_carries_the_rules_and_the_failing_claims(published):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert claims.DECISION_RULES in text
    failures = claims.failing_published(published)
    listed = ", ".join(f"`{f.id}`" for f in failures)
    assert f"{len(failures)} of the {len(published)} claims fail: {listed}" in text


def test_the_command_line_lists_failures_and_checks_quotes(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "dlarepro.claims", *a], capture_output=True, text=True,
                                    env=ENV, timeout=120)
    out = run("failing")
    assert out.returncode == 0 and "cifar100-dla-l-vs-resnet-56" in out.stdout and "FAILS" in out.stdout
    assert "disagree with the paper's own tables" in out.stdout
    text = tmp_path / "paper.txt"
    text.write_text("nothing of the paper here")
    out = run("quotes", "--paper", str(text))
    assert out.returncode == 1 and "is not in the paper's text" in out.stdout
    out = run("quotes", "--paper", str(tmp_path / "missing.txt"))
    assert out.returncode == 2 and out.stderr.startswith("error:") and "Traceback" not in out.stderr


# ---------------------------------------------------------------------------------------------
# the p columns' partners


def test_every_table_row_has_the_partners_the_paper_compares_it_with():
    for table in paper.TABLES:
        rows = paper.load_table(table)
        found = claims.partners(table, rows)
        assert len(found) == len(rows)
    t1 = paper.load_table(1)
    by_label = dict(zip(t1.label + "/" + t1.dataset + "/" + t1.depth.astype(str), claims.partners(1, t1)))
    assert [p.key for p in by_label["DLA-L (ours)/cifar100/56"]] == ["cifar100/none/56", "cifar100/mrla_l/56"]
    assert [p.key for p in by_label["SE/cifar10/20"]] == ["cifar10/none/20"]
    assert by_label["ResNet-110/cifar10/110"] == []
    t4 = paper.load_table(4)
    rnn = claims.partners(4, t4[t4.cell == "rnn"])[0]
    assert [(p.key, p.label) for p in rnn] == [("cifar100/dla_l/110", "DSU cell in DLA-L-110"),
                                               ("cifar100/none/110", "ResNet-110 (Table 1)")]
    t5 = paper.load_table(5)
    assert {p.key for ps in claims.partners(5, t5) for p in ps} == {"cifar100/dla_l/56/sigma=identity",
                                                                    "cifar100/dla_l/110/sigma=identity"}
    assert "Holm" in claims.STAR_RULE and "*" in claims.STAR_RULE


def test_partners_accept_a_reports_rows_with_paper_depths():
    rows = pd.DataFrame({"dataset": ["cifar100"], "arch": ["dia"], "paper_depth": [56], "cell": ["dsu"]})
    assert [p.key for p in claims.partners(6, rows)[0]] == ["cifar100/none/56", "cifar100/dia/56"]


# ---------------------------------------------------------------------------------------------
# Figure 2 as numbers


def test_attention_stats_on_known_scores():
    images, heads = 4, 2
    first = np.ones((images, heads, 1))                        # one layer: excluded from every average
    one_hot = np.zeros((images, heads, 2))
    one_hot[..., 0] = 1                                          # all on one layer, the same for every image
    uniform = np.full((images, heads, 3), 1 / 3)
    s = claims.attention_stats([first, one_hot, uniform])
    assert s["input_std"] == 0 and s["off_peak"] == pytest.approx((0 + 2 / 3) / 2)
    assert s["entropy"] == pytest.approx((0 + math.log(3)) / 2)
    assert s["entropy_normalised"] == pytest.approx(0.5)
    varying = np.zeros((images, heads, 2))
    varying[:2, :, 0] = varying[2:, :, 1] = 1                   # half the images on each layer
    s = claims.attention_stats([first, varying])
    assert s["input_std"] == pytest.approx(0.5) and s["entropy"] == 0 and s["off_peak"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"block 1: expected scores \[images, heads, t\]"):
        claims.attention_stats([np.ones((3, 2))])


def test_attention_stats_from_a_file_and_over_seeds(tmp_path):
    rng = np.random.default_rng(0)
    blocks = [rng.dirichlet(np.ones(t), size=(6, 2)) for t in (1, 2, 3)]
    means = [b.mean(0) for b in blocks]
    matrix = np.full((3, 3), np.nan)
    for i, m in enumerate(means):
        matrix[i, : i + 1] = m.mean(0)
    arrays = {"scores": matrix, **{f"block{i + 1}": m for i, m in enumerate(means)}}
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    assert claims.stats_from_file(old) is None  # written before the std and entropy arrays existed
    for i, b in enumerate(blocks):
        arrays[f"std_block{i + 1}"] = b.std(0)
        arrays[f"entropy_block{i + 1}"] = -(b * np.log(b)).sum(-1).mean(0)
    new = tmp_path / "new.npz"
    np.savez(new, **arrays)
    assert claims.stats_from_file(new) == pytest.approx(claims.attention_stats(blocks))
    assert claims.over_seeds([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    text = claims.figure2_caption({"MRLA-B": [{"input_std": 0.01, "entropy": 0.1}] * 2, "DLA-B": []})
    assert "MRLA-B: score std across test images 0.010 ± 0.000" in text and "DLA-B: no run" in text


def test_measurements_from_a_runs_table(tmp_path):
    runs = pd.DataFrame([
        {"run_id": "r1", "config_id": "c1", "dataset": "cifar100", "arch": "dla_l", "paper_depth": 110, "knobs": "",
         "detector": "", "best_top1": 76.1, "final_top1": 75.9, "params": 1414668, "macs": 2.5e8,
         "attention_scores": ""},
        {"run_id": "r2", "config_id": "c1", "dataset": "cifar100", "arch": "dla_l", "paper_depth": 110, "knobs": "",
         "detector": "", "best_top1": 76.5, "final_top1": 76.2, "params": 1414668, "macs": 2.5e8,
         "attention_scores": ""},
        {"run_id": "r3", "config_id": "c2", "dataset": "cifar100", "arch": "dla_l", "paper_depth": 110,
         "knobs": "cell=lstm", "detector": "", "best_top1": 75.0, "final_top1": 74.8, "params": 1.93e6, "macs": 3e8,
         "attention_scores": ""},
        {"run_id": "r4", "config_id": "c3", "dataset": "cifar100", "arch": "dla_l", "paper_depth": 110,
         "knobs": "reduction=8", "detector": "", "best_top1": 70.0, "final_top1": 70.0, "params": 1e6, "macs": 1e8,
         "attention_scores": ""},
        {"run_id": "r5", "config_id": "c4", "dataset": "coco", "arch": "dla_l", "paper_depth": 50, "knobs": "",
         "detector": "faster_rcnn", "best_top1": None, "final_top1": None, "params": 44.7e6, "macs": None,
         "bbox_ap": 40.1, "bbox_ap75": 43.0, "attention_scores": ""},
    ])
    m = claims.measurements_from_runs(runs)
    assert m["cifar100/dla_l/110"]["top1"] == [76.1, 76.5]
    assert m["cifar100/dla_l/110"]["params_m"] == pytest.approx([1.414668, 1.414668])
    assert m["cifar100/dla_l/110/cell=lstm"]["top1"] == [75.0]
    assert m["coco/dla_l/50/detector=faster_rcnn"] == {"ap": [40.1], "ap75": [43.0], "params_m": [44.7]}
    assert len(m) == 3  # reduction=8 is no model of the paper's tables
    assert claims.measurements_from_runs(runs, top1="final_top1")["cifar100/dla_l/110"]["top1"] == [75.9, 76.2]
    flagged = claims.measurements_from_runs(runs.assign(synthetic=[True, False, False, False, False]))
    assert flagged["cifar100/dla_l/110"]["synthetic"] == [1.0, 0.0]
    clash = runs.iloc[:1].assign(knobs="dsu_state=first_image", config_id="c9")
    both = pd.concat([runs.iloc[:2], clash])
    with pytest.raises(ValueError, match="both describe the paper row 'cifar100/dla_l/110'"):
        claims.measurements_from_runs(both, ignore_knobs=("dsu_state",))
