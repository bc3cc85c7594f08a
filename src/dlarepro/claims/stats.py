"""The statistics behind the verdicts: Welch contrasts of row means, equivalence and one-sample
tests, Holm's correction, and the seeds a two-sided Welch test needs for 80 % power.

Every seed-based quantity a claim makes is a *contrast*: a weighted sum ``Σ w_k · mean_k`` of the
means of a few rows (``+1, −1`` for a difference; least-squares slope weights for a slope over
depth). Its standard error is Welch's, ``sqrt(Σ w_k² s_k² / n_k)``, and its degrees of freedom the
Welch–Satterthwaite ones, so a two-row contrast is exactly Welch's two-sample t-test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8
#: the power search stops here; a claim needing more seeds reports infinity
MAX_SEEDS = 10_000


@dataclass(frozen=True)
class Term:
    """One row in a contrast: its weight, and the mean, sample std and count of its values. ``fixed``
    marks a row whose count does not grow with a new experiment (the paper's published five runs)."""

    weight: float
    mean: float
    sd: float
    n: int
    fixed: bool = False

    @classmethod
    def of(cls, weight: float, values: Sequence[float]) -> "Term":
        v = np.asarray(values, dtype=float)
        return cls(weight, float(v.mean()) if len(v) else math.nan,
                   float(v.std(ddof=1)) if len(v) >= 2 else math.nan, len(v))


@dataclass(frozen=True)
class Estimate:
    """A contrast: estimate, standard error, Welch df, the two-sided 95 % interval and the two-sided
    p-value of ``contrast = 0``. ``se`` is NaN (and so are the interval and p) without spread."""

    value: float
    se: float
    df: float

    def t_quantile(self, level: float = 1 - ALPHA / 2) -> float:
        return math.inf if not self.df > 0 else float(stats.t.ppf(level, self.df))

    @property
    def ci(self) -> tuple[float, float]:
        if self.se == 0:
            return self.value, self.value
        half = self.t_quantile() * self.se
        return self.value - half, self.value + half

    @property
    def p(self) -> float:
        if math.isnan(self.se):
            return math.nan
        if self.se == 0:
            return 0.0 if self.value != 0 else 1.0
        return float(2 * stats.t.sf(abs(self.value) / self.se, self.df))

    def p_equivalent(self, margin: float) -> float:
        """Two one-sided tests of ``|contrast| < margin``: the larger of the two p-values."""
        if math.isnan(self.se):
            return math.nan
        if self.se == 0:
            return 0.0 if abs(self.value) < margin else 1.0
        lower = stats.t.sf((self.value + margin) / self.se, self.df)   # H0: contrast <= -margin
        upper = stats.t.cdf((self.value - margin) / self.se, self.df)  # H0: contrast >= +margin
        return float(max(lower, upper))

    def p_below(self, bound: float) -> float:
        """One-sided test of ``contrast < bound`` (H0: contrast >= bound)."""
        if math.isnan(self.se):
            return math.nan
        if self.se == 0:
            return 0.0 if self.value < bound else 1.0
        return float(stats.t.cdf((self.value - bound) / self.se, self.df))


def welch_contrast(terms: Sequence[Term]) -> Estimate:
    """``Σ w_k mean_k`` with Welch's standard error and Welch–Satterthwaite degrees of freedom."""
    value = float(sum(t.weight * t.mean for t in terms))
    if any(t.n < 2 or math.isnan(t.sd) for t in terms if t.weight != 0):
        return Estimate(value, math.nan, math.nan)
    parts = [t.weight ** 2 * t.sd ** 2 / t.n for t in terms if t.weight != 0]
    var = sum(parts)
    if var == 0:
        return Estimate(value, 0.0, math.inf)
    df = var ** 2 / sum(v ** 2 / (t.n - 1) for v, t in zip(parts, [t for t in terms if t.weight != 0]))
    return Estimate(value, math.sqrt(var), df)


def slope_weights(xs: Sequence[float]) -> np.ndarray:
    """Weights that turn values at ``xs`` into their least-squares slope: ``(x − x̄) / Σ(x − x̄)²``."""
    x = np.asarray(xs, dtype=float)
    dx = x - x.mean()
    return dx / float((dx ** 2).sum())


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment; NaN entries stay NaN and do not count in the family."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = [i for i in np.argsort(p, kind="stable") if not math.isnan(p[i])]
    m, running = len(idx), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def stars(p: float) -> str:
    """``***`` p < 0.001, ``**`` p < 0.01, ``*`` p < 0.05, else '' (NaN: '')."""
    if p is None or math.isnan(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


# ---------------------------------------------------------------------------------------------
# power


def _spread(terms: Sequence[Term], n: int) -> tuple[float, float]:
    """(standard error, Welch df) of the contrast with ``n`` values in every row that is not fixed."""
    parts = [(t.weight ** 2 * t.sd ** 2 / (t.n if t.fixed else n), t.n if t.fixed else n)
             for t in terms if t.weight != 0]
    var = sum(v for v, _ in parts)
    df = var ** 2 / sum(v ** 2 / (k - 1) for v, k in parts) if var > 0 else math.inf
    return math.sqrt(var), df


def power_two_sided(effect: float, terms: Sequence[Term], n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided Welch test of the contrast at the true ``effect`` with ``n`` seeds per row
    (noncentral t with the Welch–Satterthwaite df; the rows' stds are taken as known)."""
    se, df = _spread(terms, n)
    if se == 0:
        return 1.0 if effect != 0 else 0.0
    crit = stats.t.ppf(1 - alpha / 2, df)
    ncp = effect / se
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))


def power_equivalent(effect: float, margin: float, terms: Sequence[Term], n: int, alpha: float = ALPHA) -> float:
    """Power of the two one-sided tests of ``|contrast| < margin`` at the true ``effect`` (the usual
    noncentral-t approximation: P(T_low > t) − P(T_high > −t), clipped at 0)."""
    se, df = _spread(terms, n)
    if se == 0:
        return 1.0 if abs(effect) < margin else 0.0
    crit = stats.t.ppf(1 - alpha, df)
    value = stats.nct.cdf(-crit, df, (effect - margin) / se) - stats.nct.cdf(crit, df, (effect + margin) / se)
    return float(max(0.0, value))


def seeds_for_power(power_at, target: float = POWER) -> float:
    """The smallest number of seeds per row (>= 2) at which ``power_at(n)`` reaches ``target``;
    infinity beyond :data:`MAX_SEEDS`. Power grows with n, so a doubling then bisection search."""
    if power_at(2) >= target:
        return 2
    low, high = 2, 4
    while power_at(high) < target:
        if high >= MAX_SEEDS:
            return math.inf
        low, high = high, min(2 * high, MAX_SEEDS)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if power_at(mid) >= target else (mid, high)
    return high
