"""Does each sentence agree with the paper's own tables? The published check of every kind of
claim, on the printed numbers, with the arithmetic written out (see :mod:`dlarepro.claims.rules`
for the rules in words).

Printed numbers are exact decimals (``Decimal``) as printed; a printed ``x`` stands for any true
value within ``u(x)``, half a unit of its last digit, and every check gives the sentence the benefit
of that doubt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from .rows import Row, fmt, half_unit
from .spec import Claim, Part
from .stats import ALPHA, Term, slope_weights, welch_contrast

#: slopes over depth are shown per 100 layers (points of top-1 per 100 layers)
SLOPE_SCALE = 100


@dataclass(frozen=True)
class Published:
    """``recomputed``: the claim's quantity from the tables (the weakest part's, for several pairs);
    ``holds``: True/False, None when the paper publishes no data (Figure 2); ``arithmetic``: one line
    per part; ``effects``: each part's contrast from the tables (the effect a power analysis assumes)."""

    recomputed: float
    holds: bool | None
    arithmetic: tuple[str, ...]
    effects: tuple[float, ...]
    decisive: int = 0  # the part ``recomputed`` describes


def check(claim: Claim, seeds: int, exact: bool = False) -> Published:
    """The published check of ``claim`` (``seeds``: the runs behind each printed mean ± std). With
    ``exact`` the rows hold exact counts (ours): no rounding doubt on them, a tie is a tie."""
    if claim.figure:
        return Published(math.nan, None, (f"the paper shows Figure {claim.figure} as an image and publishes no "
                                          f"numbers behind it: nothing to check",), (math.nan,) * len(claim.parts))
    u = (lambda value: Decimal(0)) if exact else half_unit
    results = [_PART_CHECKS[claim.kind](claim, p, seeds, u) for p in claim.parts]
    holds = all(ok for ok, _, _, _ in results)
    # the part that decides: the first failing one, else the one closest to failing
    failing = [i for i, r in enumerate(results) if not r[0]]
    decisive = failing[0] if failing else min(range(len(results)), key=lambda i: results[i][2])
    lines = tuple(line for _, line, _, _ in results)
    if claim.quoted:
        ok, line = _quoted(claim)
        holds, lines = holds and ok, lines + (line,)
    return Published(float(results[decisive][3]), holds, lines, tuple(float(r[3]) for r in results), decisive)


def _v(row: Row, metric: str) -> Decimal:
    value = row.value(metric)
    assert value is not None  # spec checked every number a claim reads is printed
    return value


def _verdict(ok: bool) -> str:
    return "holds" if ok else "FAILS"


# each part check returns (holds, arithmetic, slack (how far from failing), the part's value)


def _difference(c: Claim, p: Part, seeds: int, u):
    a, b = _v(p.a[0], c.metric), _v(p.b[0], c.metric)
    d, target = a - b, c.target
    if c.stated is not None:
        tol = u(a) + u(b) + half_unit(c.stated)
        why = "the rounding of the three printed numbers" if u(a) else "the rounding of the stated number"
    else:
        tol = u(a) + u(b) + Decimal(str(c.expected["tolerance"]))
        why = ("the rounding of the two printed numbers and " if u(a) else "") + "the formula's tolerance"
    off = abs(d - target)
    ok = off <= tol
    said = f"stated {fmt(c.stated)}" if c.stated is not None else f"the formula gives {fmt(target)} ({c.expected['derivation']})"
    line = (f"{p.a[0].name()} − {p.b[0].name()}: {fmt(a)} − {fmt(b)} = {fmt(d)}; {said}; "
            f"{'within' if ok else 'off by ' + fmt(off) + ', more than'} the ±{fmt(tol)} that {why} allows: {_verdict(ok)}")
    return ok, line, float(tol - off), d


def _greater(c: Claim, p: Part, seeds: int, u):
    a, b = _v(p.a[0], c.metric), _v(p.b[0], c.metric)
    d, tol = a - b, u(a) + u(b)
    ok = d > -tol if tol else d > 0
    sign = ">" if d > 0 else "=" if d == 0 else "<"
    extra = " (a printed tie: the rounding allows either order)" if d == 0 and tol else ""
    line = f"{p.a[0].name()} {fmt(a)} {sign} {p.b[0].name()} {fmt(b)}{extra}: {_verdict(ok)}"
    return ok, line, float(d + tol), d


def welch_from_printed(a: Row, b: Row, seeds: int, favourable: bool = False):
    """Welch's test of top-1 A > B from the printed mean ± std of two rows (``seeds`` runs each); with
    ``favourable`` at the values within rounding most favourable to the claim."""
    ma, mb = _v(a, "top1"), _v(b, "top1")
    sa, sb = a.std("top1"), b.std("top1")
    if favourable:
        ma, mb = ma + half_unit(ma), mb - half_unit(mb)
        sa, sb = max(sa - half_unit(sa), Decimal(0)), max(sb - half_unit(sb), Decimal(0))
    return welch_contrast([Term(1.0, float(ma), float(sa), seeds), Term(-1.0, float(mb), float(sb), seeds)])


def _significant(c: Claim, p: Part, seeds: int, u):
    a, b = p.a[0], p.b[0]
    printed, best = welch_from_printed(a, b, seeds), welch_from_printed(a, b, seeds, favourable=True)
    ok = best.value > 0 and best.p < ALPHA
    t = printed.value / printed.se if printed.se else math.inf
    line = (f"{a.name()} {fmt(_v(a, 'top1'))} ± {fmt(a.std('top1'))} vs {b.name()} {fmt(_v(b, 'top1'))} ± "
            f"{fmt(b.std('top1'))} (n = {seeds} each): difference {fmt(_v(a, 'top1') - _v(b, 'top1'))}, Welch t = {t:.2f}, "
            f"df = {printed.df:.1f}, p = {printed.p:.3g} (at the rounding's most favourable values p = {best.p:.3g}); "
            f"significant at {ALPHA}: {_verdict(ok)}")
    return ok, line, float(ALPHA - best.p) if best.value > 0 else -1.0, Decimal(str(round(printed.value, 10)))


def _comparable(c: Claim, p: Part, seeds: int, u):
    a, b = _v(p.a[0], c.metric), _v(p.b[0], c.metric)
    d = a - b
    tol = Decimal(str(c.margin)) + u(a) + u(b)
    ok = abs(d) <= tol
    line = (f"{p.a[0].name()} − {p.b[0].name()}: {fmt(a)} − {fmt(b)} = {fmt(d)}; comparable means |difference| ≤ "
            f"{c.margin:g} (+ {fmt(u(a) + u(b))} for rounding): {_verdict(ok)}")
    return ok, line, float(tol - abs(d)), d


def _value(c: Claim, p: Part, seeds: int, u):
    a = _v(p.a[0], c.metric)
    off = abs(a - c.stated)
    tol = half_unit(c.stated)
    ok = off <= tol
    line = f"{p.a[0].name()} prints {fmt(a)}; the sentence says {fmt(c.stated)}: {_verdict(ok)}"
    return ok, line, float(tol - off), a


def slope(values: list[float], depths: tuple[int, ...]) -> float:
    """Least-squares slope of values against depth, in units per :data:`SLOPE_SCALE` layers."""
    return float(slope_weights(depths) @ values) * SLOPE_SCALE


def _slope(c: Claim, p: Part, seeds: int, u):
    a = [_v(r, c.metric) for r in p.a]
    b = [_v(r, c.metric) for r in p.b]
    w = slope_weights(p.depths) * SLOPE_SCALE
    diff = float(w @ [float(x - y) for x, y in zip(a, b)])
    tol = float(abs(w) @ [float(u(x) + u(y)) for x, y in zip(a, b)])
    ok = diff > -tol if tol else diff > 0
    depths = "/".join(map(str, p.depths))
    line = (f"slope over depths {depths} (points per {SLOPE_SCALE} layers, least squares): "
            f"{p.a[0].model_name()} {slope([float(x) for x in a], p.depths):.3f} "
            f"({', '.join(map(fmt, a))}) vs {p.b[0].model_name()} {slope([float(y) for y in b], p.depths):.3f} "
            f"({', '.join(map(fmt, b))}); difference {diff:.3f} (rounding allows ±{tol:.3f}): {_verdict(ok)}")
    return ok, line, diff + tol, Decimal(str(round(diff, 10)))


def _quoted(c: Claim) -> tuple[bool, str]:
    printed = [v for p in c.parts for v in (_v(p.a[0], c.metric), _v(p.b[0], c.metric))]
    ok = all(q == v and q.as_tuple().exponent == v.as_tuple().exponent for q, v in zip(c.quoted, printed))
    return ok, (f"numbers quoted in the sentence {', '.join(map(fmt, c.quoted))}; printed in the table "
                f"{', '.join(map(fmt, printed))}: {_verdict(ok)}")


_PART_CHECKS = {"difference": _difference, "greater": _greater, "significantly_greater": _significant,
                "comparable": _comparable, "value": _value, "slope_greater": _slope}
