"""A claim measured on our runs: per-seed values of each row -> the claim's contrast, its 95 %
Welch interval, the p-value its verdict rests on, and the seeds 80 % power would need.

``measurements`` maps a row key (:func:`dlarepro.claims.rows.row_key`) to the metrics of that
model's finished runs: ``{"cifar100/dla_l/110": {"top1": [76.2, 76.5, ...], "params_m": [1.414668, ...]}}``.
The verdict itself needs the Holm correction across a family of claims; :mod:`.evaluate` applies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Mapping, Sequence

import numpy as np

from . import published
from .published import SLOPE_SCALE
from .rows import Row
from .spec import Claim, Part
from .stats import Estimate, Term, power_equivalent, power_two_sided, seeds_for_power, slope_weights, welch_contrast

Measurements = Mapping[str, Mapping[str, Sequence[float]]]
#: decimals that write a count exactly: parameters in millions, MACs in G
EXACT_DIGITS = {"params_m": 6, "flops_g": 9}
#: the metric that flags runs trained on synthetic data (1) rather than the real dataset (0)
SYNTHETIC = "synthetic"
SYNTHETIC_NOTE = "SYNTHETIC DATA: a pipeline check, not a reproduction. "


@dataclass
class PartResult:
    estimate: Estimate        # the contrast the verdict tests
    p: float                  # the p-value the verdict tests (see rules)
    excluded: bool            # the 95 % interval rules the claim out
    right_sign: bool          # the estimate points the claimed way (always True for comparable/value/at_most)
    size_ok: bool             # a stated size is not above the interval
    seeds: float              # seeds per row for 80 % power (NaN: not computable)
    n: int                    # fewest seeds of its rows
    text: str
    shown: Estimate | None = None  # what the measured/ci columns show, when not the contrast (value claims)

    @property
    def display(self) -> Estimate:
        return self.shown or self.estimate


@dataclass
class Measured:
    """What our runs say about one claim, before the Holm correction."""

    status: str                          # "measured", "not run" or "deterministic"
    measured: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    p: float = math.nan
    n_seeds: int = 0
    parts: list[PartResult] = field(default_factory=list)
    holds: bool | None = None            # deterministic claims: the published rule on our counts
    seeds: float = math.nan
    detail: str = ""
    synthetic: bool = False              # some of the runs it rests on were trained on synthetic data
    row_values: str = ""                 # each row's mean ± sample std over its seeds (n)


def values_of(row: Row, metric: str, measurements: Measurements) -> np.ndarray | None:
    key = row.key
    found = measurements.get(key, {}).get(metric) if key else None
    if found is None:
        return None
    v = np.asarray(list(found), dtype=float)
    v = v[np.isfinite(v)]
    return v if len(v) else None


def _synthetic(row: Row, measurements: Measurements) -> bool:
    flags = values_of(row, SYNTHETIC, measurements)
    return flags is not None and bool((flags > 0).any())


def _weights(claim: Claim, part: Part) -> list[tuple[float, Row]]:
    if claim.kind == "slope_greater":
        w = slope_weights(part.depths) * SLOPE_SCALE
        return [(float(x), r) for x, r in zip(w, part.a)] + [(-float(x), r) for x, r in zip(w, part.b)]
    return [(1.0, r) for r in part.a] + [(-1.0, r) for r in part.b]


def measure(claim: Claim, measurements: Measurements, seeds: int, effects: Sequence[float]) -> Measured:
    """Measure ``claim`` (``seeds``: the published runs per printed mean; ``effects``: each part's
    contrast in the paper's tables, the effect the power analysis assumes)."""
    unbuilt = sorted({r.name() for p in claim.parts for r in p.rows() if r.key is None})
    usable = [(p, e) for p, e in zip(claim.parts, effects) if all(r.key is not None for r in p.rows())]
    note = f"not built by this project, left out: {'; '.join(unbuilt)}. " if unbuilt else ""
    if not usable:
        return Measured("not run", detail=note + "no comparison of the claim involves only models we build")
    missing = sorted({r.name() for p, _ in usable for r in p.rows()
                      if values_of(r, claim.metric, measurements) is None})
    if missing:
        return Measured("not run", detail=note + f"no finished runs of: {'; '.join(missing)}")
    synthetic = any(_synthetic(r, measurements) for p, _ in usable for r in p.rows())
    if synthetic:
        note = SYNTHETIC_NOTE + note
    rows = row_values([r for p, _ in usable for r in p.rows()], claim.metric, measurements)
    if claim.deterministic:
        return replace(_deterministic(claim, [p for p, _ in usable], measurements, note), synthetic=synthetic,
                       row_values=rows)
    results = [_part(claim, p, e, measurements, seeds) for p, e in usable]
    shown = next((r for r in results if r.excluded), None) or max(
        results, key=lambda r: -1.0 if math.isnan(r.p) else r.p)
    ps = [r.p for r in results]
    p = math.nan if any(math.isnan(x) for x in ps) else max(ps)
    powers = [r.seeds for r in results]
    return Measured("measured", shown.display.value, shown.display.ci, p, min(r.n for r in results), results,
                    seeds=math.nan if any(math.isnan(s) for s in powers) else max(powers),
                    detail=note + " | ".join(r.text for r in results), synthetic=synthetic, row_values=rows)


def row_values(rows: Sequence[Row], metric: str, measurements: Measurements) -> str:
    """'Table 1, CIFAR-100, DLA-L-56: 75.46 ± 0.26 (n = 5); ...': each row once, in order, its mean and
    sample std over seeds (no std for one seed)."""
    out: dict[str, str] = {}
    for row in rows:
        v = values_of(row, metric, measurements)
        spread = f" ± {v.std(ddof=1):.4g}" if len(v) >= 2 else ""
        out.setdefault(row.name(), f"{row.name()}: {v.mean():.4g}{spread} (n = {len(v)})")
    return "; ".join(out.values())


def _part(claim: Claim, part: Part, effect: float, measurements: Measurements, seeds: int) -> PartResult:
    terms = [Term.of(w, values_of(r, claim.metric, measurements)) for w, r in _weights(claim, part)]
    shown = None
    if claim.kind == "value":  # our mean (shown with its own interval) against the published mean ± std
        shown = welch_contrast(terms)
        published = part.a[0]
        terms.append(Term(-1.0, float(published.value(claim.metric)), float(published.std(claim.metric)), seeds,
                          fixed=True))
    est = welch_contrast(terms)
    low, high = est.ci
    n = min(t.n for t in terms if not t.fixed)
    target = float(claim.target) if claim.target is not None and claim.kind == "difference" else None
    if claim.kind in ("comparable", "value"):
        m = claim.margin
        p, right, size_ok = est.p_equivalent(m), True, True
        excluded = low > m or high < -m
        truth = 0.0 if claim.kind == "value" else effect
        power = (lambda k: power_equivalent(truth, m, terms, k)) if abs(truth) < m else None
        claim_text = f"|difference| < {m:g}"
    elif claim.kind == "at_most":
        p, right, size_ok = est.p_below(claim.bound), True, True
        excluded = low > claim.bound
        power, claim_text = None, f"mean ≤ {claim.bound:g}"
    else:
        p, right = est.p, est.value > 0
        size_ok = target is None or high >= target
        excluded = high < 0 or (target is not None and high < target)
        power = (lambda k: power_two_sided(effect, terms, k)) if effect > 0 else None
        claim_text = "> 0" + (f", size {target:g}" if target is not None else "")
    has_spread = not math.isnan(est.se)
    needed = seeds_for_power(power) if power is not None and has_spread else math.nan
    names = " vs ".join(dict.fromkeys(r.fields["label"] for r in part.rows()))
    text = (f"{names}{' ' + dict(part.group).__repr__() if part.group else ''}: {est.value:.4g} "
            f"[{low:.4g}, {high:.4g}] (claim {claim_text}; p {p:.3g}; n ≥ {n})" if has_spread else
            f"{names}: {est.value:.4g} (one seed on a side: no spread, no test)")
    return PartResult(est, p, bool(excluded) and has_spread, bool(right), bool(size_ok), needed, n, text, shown)


def _deterministic(claim: Claim, parts: list[Part], measurements: Measurements, note: str) -> Measured:
    """Parameter counts and MACs: the published check's rule applied to our counts, which are exact (no
    rounding doubt on them, a tie is a tie); a stated number keeps the tolerance of its printed digits."""
    def ours(row: Row) -> Decimal:
        exact = float(np.median(values_of(row, claim.metric, measurements)))
        return Decimal(f"{exact:.{EXACT_DIGITS[claim.metric]}f}")

    rebuilt = [Part(p.group, tuple(_with(r, claim.metric, ours(r)) for r in p.a),
                    tuple(_with(r, claim.metric, ours(r)) for r in p.b), p.depths) for p in parts]
    result = published.check(replace(claim, parts=tuple(rebuilt), quoted=()), 1, exact=True)
    decisive = parts[result.decisive]
    shown = sum(w * float(np.median(values_of(r, claim.metric, measurements))) for w, r in _weights(claim, decisive))
    return Measured("deterministic", shown, (shown, shown), math.nan, 1, holds=bool(result.holds),
                    detail=note + "our exact counts: " + " | ".join(result.arithmetic))


def _with(row: Row, metric: str, value: Decimal) -> Row:
    return Row(row.table, row.index, row.fields, {**row.printed, row.column(metric): format(value, "f")})
