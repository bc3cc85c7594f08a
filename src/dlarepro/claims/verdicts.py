"""Every claim evaluated: the published check, the measurement on our seeds, Holm's correction
within each table's claims, the verdict; one DataFrame, ``claims.csv``, and what a report's
"Claims" section needs (the verdicts and the arithmetic of every published check that fails)."""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import atomic
from . import published, spec
from .measured import Measured, Measurements, measure
from .rows import UNITS
from .rules import VERDICT_RULES
from .stats import ALPHA, holm

COLUMNS = ("id", "section", "quote", "kind", "family", "metric", "unit", "stated", "expected", "recomputed",
           "published_holds", "published_arithmetic", "measured", "ci_low", "ci_high", "n_seeds", "p", "p_holm",
           "verdict", "verdict_detail", "row_values", "seeds_for_80pct_power", "synthetic", "note")
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not run")


def evaluate(claims: spec.ClaimSet | None = None, measurements: Measurements | None = None) -> pd.DataFrame:
    """One row per claim, in the file's order, with the columns :data:`COLUMNS` (units: ``unit``;
    slopes in points per 100 layers). Without ``measurements`` every verdict is ``not run``."""
    claims = claims if claims is not None else spec.load()
    measurements = measurements or {}
    rows: list[dict[str, Any]] = []
    results: list[Measured] = []
    for c in claims:
        pub = published.check(c, claims.published_seeds)
        got = measure(c, measurements, claims.published_seeds, pub.effects)
        results.append(got)
        unit = UNITS[c.metric] + (" per 100 layers" if c.kind == "slope_greater" else "")
        rows.append({
            "id": c.id, "section": c.section, "quote": c.quote, "kind": c.kind, "family": c.family,
            "metric": c.metric, "unit": unit,
            "stated": float(c.stated) if c.stated is not None else math.nan,
            "expected": float(c.target) if c.target is not None else (float(c.bound) if c.bound is not None else math.nan),
            "recomputed": pub.recomputed, "published_holds": pub.holds,
            "published_arithmetic": " | ".join(pub.arithmetic),
            "measured": got.measured, "ci_low": got.ci[0], "ci_high": got.ci[1], "n_seeds": got.n_seeds,
            "p": got.p, "seeds_for_80pct_power": got.seeds, "synthetic": got.synthetic, "note": c.note,
            "row_values": got.row_values,
        })
    df = pd.DataFrame(rows)
    df["p_holm"] = np.nan
    for _, idx in df.groupby("family", sort=False).groups.items():
        df.loc[idx, "p_holm"] = holm(df.loc[idx, "p"].to_numpy(dtype=float))
    verdicts = [verdict(m, p_holm) for m, p_holm in zip(results, df["p_holm"])]
    df["verdict"] = [v for v, _ in verdicts]
    df["verdict_detail"] = [d for _, d in verdicts]
    df["published_holds"] = df["published_holds"].astype("boolean")
    df["n_seeds"] = df["n_seeds"].astype(int)
    return df[list(COLUMNS)]


def verdict(m: Measured, p_holm: float) -> tuple[str, str]:
    """The verdict of one measured claim given its Holm-corrected p (see :mod:`.rules`)."""
    if m.status == "not run":
        return "not run", m.detail
    if m.status == "deterministic":
        return ("reproduced" if m.holds else "not reproduced"), m.detail
    if any(r.excluded for r in m.parts):
        return "not reproduced", m.detail
    if (not math.isnan(p_holm) and p_holm < ALPHA and all(r.right_sign for r in m.parts)
            and all(r.size_ok for r in m.parts)):
        return "reproduced", m.detail
    return "inconclusive", m.detail


# ---------------------------------------------------------------------------------------------
# outputs


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    out = df.copy()
    out["published_holds"] = out["published_holds"].map(lambda v: "" if v is pd.NA else str(bool(v)).lower())
    out["synthetic"] = out["synthetic"].map(lambda v: str(bool(v)).lower())
    out.to_csv(buf, index=False, float_format="%.6g", lineterminator="\n")
    return buf.getvalue().encode()


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> bool:
    """Write ``claims.csv`` atomically (a reader sees the old file or the new one); True if the bytes
    changed. ``published_holds`` is written as true/false, empty where the paper publishes no data."""
    data = to_csv_bytes(df)
    try:
        if Path(path).read_bytes() == data:
            return False
    except OSError:
        pass
    atomic.write_bytes(path, data)
    return True


@dataclass(frozen=True)
class Failure:
    """A sentence the paper's own tables contradict, with the arithmetic."""

    id: str
    section: str
    quote: str
    arithmetic: tuple[str, ...]   # every part; the failing ones say FAILS

    def text(self) -> str:
        lines = [f"{self.id} ({self.section}): \"{self.quote}\""]
        lines += [f"    {line}" for line in self.arithmetic]
        return "\n".join(lines)


def failing_published(df: pd.DataFrame | None = None) -> list[Failure]:
    """Every claim whose published check fails, in the file's order (``df`` from :func:`evaluate`)."""
    df = df if df is not None else evaluate()
    bad = df[df["published_holds"].fillna(True).eq(False)]
    return [Failure(r.id, r.section, r.quote, tuple(r.published_arithmetic.split(" | "))) for r in bad.itertuples()]


def counts(df: pd.DataFrame) -> dict[str, int]:
    """Claims per verdict (every verdict named, zeros included), how many published checks fail, and
    how many claims rest on runs trained on synthetic data."""
    out = {v: int((df["verdict"] == v).sum()) for v in VERDICTS}
    out["published_fails"] = int(df["published_holds"].fillna(True).eq(False).sum())
    out["claims"] = len(df)
    out["synthetic"] = int(df["synthetic"].sum())
    return out


def section_data(df: pd.DataFrame) -> dict[str, Any]:
    """What a report's "Claims" section needs, as plain data: ``verdicts`` (a DataFrame: id, section,
    quote, stated, recomputed, published_holds, measured, ci_low, ci_high, p_holm, verdict, unit),
    ``failures`` (:class:`Failure` list), ``counts`` and ``rules`` (the caption's verdict rules). A
    claim whose ``synthetic`` is true rests on runs trained on synthetic data: say so wherever it is shown."""
    cols = ["id", "section", "quote", "unit", "stated", "recomputed", "published_holds", "measured", "ci_low",
            "ci_high", "p_holm", "verdict", "seeds_for_80pct_power", "synthetic"]
    return {"verdicts": df[cols].copy(), "failures": failing_published(df), "counts": counts(df),
            "rules": VERDICT_RULES}
