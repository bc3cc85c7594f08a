"""Placeholder: replaced below by DECISION_RULES, the one written statement of the rules."""

from __future__ import annotations

from .stats import ALPHA, MAX_SEEDS, POWER

_A = f"{ALPHA:g}"
_POWER = f"{POWER:.0%}"

#: does the sentence agree with the paper's own tables? (published_holds)
PUBLISHED_RULES = (
    "Published check (published_holds): does the sentence agree with the paper's own tables? Every table value is "
    "taken as printed; a printed x stands for any true value within u(x), half a unit of its last digit "
    "(92.96: ±0.005; 78.0: ±0.05), and the check gives the sentence the benefit of that doubt.",
    "difference (\"A beats B by s\"): holds when |(A − B) − s| ≤ u(A) + u(B) + u(s); when the size comes from a "
    "formula in the sentence, its declared tolerance replaces u(s).",
    "greater (\"A outperforms B\", \"fewer parameters than\"): holds when A − B > −(u(A) + u(B)) for every pair the "
    "sentence names, so a printed tie holds.",
    f"significantly greater: a two-sided Welch t-test on the printed mean ± std, with the paper's five runs per row "
    f"and the std read as the sample std, gives p < {_A} for every pair, at the values within rounding most "
    f"favourable to the claim (means u apart in the claimed direction, stds u smaller).",
    "comparable (\"comparable\", \"similar\"): |A − B| ≤ m + u(A) + u(B), the margin m declared with the claim (0.5 "
    "points of top-1 unless it says otherwise); numbers the sentence quotes must equal the printed ones.",
    "value: the printed value is within u(s) of the stated s.",
    "slope greater (\"increases faster with depth\"): the least-squares slope of A's values over depth exceeds B's "
    "by more than −Σ|w_i|(u(A_i) + u(B_i)), the most rounding can move a slope difference.",
    "Figure 2: the paper publishes no numbers behind it, so its claims have no published check (empty).",
)

#: what our runs say (measured, ci_low, ci_high, p_holm, verdict)
MEASURED_RULES = (
    "Measured (measured, ci_low, ci_high): each claim is a contrast of row means (a difference, a difference of "
    "slopes over depth, or for at-most claims a single mean), from per-seed values with Welch's standard error and Welch–Satterthwaite degrees of "
    "freedom; ci_low and ci_high bound its two-sided 95 % t interval. A value claim shows our mean and its "
    "interval, and its test compares our seeds with the published mean ± std (five runs). A sentence naming several pairs holds only if every pair does: its p-value "
    "is the largest of its pairs' (an intersection-union test), and measured and the interval are those of that "
    "weakest pair (or of a pair that rules the claim out).",
    "p_holm: the claims of one table (or figure) form a family; their p-values are Holm-corrected. The p-value "
    "tests the claim itself: a two-sided Welch test of no difference for a direction or a size; two one-sided "
    "tests of |difference| ≥ m for comparable and value claims; a one-sided test of mean ≥ bound for at-most claims.",
    f"reproduced: p_holm < {_A}, the estimate points the claimed way, and a stated size is not above the interval "
    f"(ci_high ≥ stated).",
    "not reproduced: the 95 % interval lies entirely on the wrong side of 0 or entirely below a stated size; for "
    "comparable and value claims, entirely outside [−m, m]; for at-most claims, entirely above the bound.",
    "inconclusive: neither; also when a row has a single seed (no spread, no test).",
    "not run: a row the claim needs has no finished run. Rows of models this project does not build (CBAM, A2, AA, "
    "GC, RLAg, BA, NL, DIANet on ImageNet) are left out of a claim's pairs; a claim with nothing left is not run.",
    "Parameter counts and MACs are exact: measured is the exact difference of our models' counts, the interval "
    "is that point, there is no p-value, and the verdict applies the published check's rule to our exact counts "
    "(only a stated number keeps the tolerance of its printed digits): reproduced or not reproduced.",
    "synthetic: true when a run the claim rests on was trained on synthetic data; its verdict is then a "
    "check of the pipeline, not a finding about the paper.",
    f"seeds_for_80pct_power: the seeds per row a new experiment needs for {_POWER} power of the claim's test at "
    f"α = {_A}, assuming the effect the paper's tables show and the spread we observed (the largest over a "
    f"claim's pairs; infinite beyond {MAX_SEEDS:,}); empty when the tables show no effect in the claimed "
    f"direction, the claim has no published effect (Figure 2), or a row has fewer than two seeds.",
)

#: the full rules: the README and the module's docstring
DECISION_RULES = "\n\n".join(("\n".join(f"- {r}" if i else r for i, r in enumerate(block)))
                             for block in (PUBLISHED_RULES, MEASURED_RULES))
#: the verdict rules alone, short enough for a table caption
VERDICT_RULES = " ".join(MEASURED_RULES[2:6])

__doc__ = "How each claim is decided (the one statement of the rules).\n\n" + DECISION_RULES
