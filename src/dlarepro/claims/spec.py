"""Read and check ``resources/paper/claims.yaml``: the schema (``resources/schemas/claims.schema.yaml``),
then the meaning: every selector names rows that exist, each kind of claim gets the rows it needs
(one row a side for a difference, one row per depth for a slope...), and every number a check
reads is printed in the table. Each claim is resolved once into its *parts*: the (A, B) pairs of
rows it compares, one per group of its ``per`` fields.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from itertools import product
from pathlib import Path
from typing import Any, Mapping

from .. import yamlfile
from ..methods import METHODS
from .rows import DETERMINISTIC, FIGURE_METRICS, FIELDS, Row, printed_table, select

KINDS = ("difference", "greater", "significantly_greater", "comparable", "value", "slope_greater", "at_most")
#: kinds whose every group compares exactly one row with one row
SINGLE_PAIR = ("difference", "comparable")


class ClaimsError(ValueError):
    """claims.yaml (or a file in its format) cannot be used; the message lists every problem."""


@dataclass(frozen=True)
class Part:
    """One comparison of a claim: rows of side A and side B (one each; for a slope one per depth,
    in ``depths`` order; B is empty for ``value`` and ``at_most``)."""

    group: tuple[tuple[str, str], ...]
    a: tuple[Row, ...]
    b: tuple[Row, ...]
    depths: tuple[int, ...] = ()

    def rows(self) -> tuple[Row, ...]:
        return self.a + self.b


@dataclass(frozen=True)
class Claim:
    id: str
    section: str
    quote: str
    stated: Decimal | None
    kind: str
    metric: str
    table: int | None
    figure: int | None
    parts: tuple[Part, ...]
    margin: float | None = None
    bound: float | None = None
    quoted: tuple[Decimal, ...] = ()
    expected: Mapping[str, Any] | None = None
    note: str = ""

    @property
    def family(self) -> str:
        """The claims whose p-values are Holm-corrected together: those of one table (or figure)."""
        return f"table{self.table}" if self.table else f"figure{self.figure}"

    @property
    def deterministic(self) -> bool:
        return self.metric in DETERMINISTIC

    @property
    def target(self) -> Decimal | None:
        """The size the sentence claims: the stated number, else the one its formula implies."""
        if self.stated is not None:
            return self.stated
        if self.expected is not None:
            return Decimal(str(self.expected["value"]))
        return None


@dataclass(frozen=True)
class ClaimSet:
    claims: tuple[Claim, ...]
    published_seeds: int
    default_margins: Mapping[str, float]
    not_checkable: tuple[Mapping[str, str], ...] = field(default=())

    def __iter__(self):
        return iter(self.claims)

    def __len__(self) -> int:
        return len(self.claims)

    def get(self, claim_id: str) -> Claim:
        for c in self.claims:
            if c.id == claim_id:
                return c
        raise KeyError(f"no claim {claim_id!r}")


def _packaged(*parts: str):
    return resources.files("dlarepro").joinpath("resources", *parts)


def schema() -> dict[str, Any]:
    return yamlfile.parse(_packaged("schemas", "claims.schema.yaml").read_text(encoding="utf-8"),
                          "claims.schema.yaml")


@lru_cache(maxsize=1)
def _default() -> ClaimSet:
    text = _packaged("paper", "claims.yaml").read_text(encoding="utf-8")
    return parse(yamlfile.parse(text, "claims.yaml"), "claims.yaml")


def load(path: str | os.PathLike | None = None) -> ClaimSet:
    """The packaged claims (``resources/paper/claims.yaml``), or those of the file ``path``."""
    if path is None:
        return _default()
    path = Path(path)
    try:
        data = yamlfile.read(path)
    except yamlfile.YamlError as err:
        raise ClaimsError(str(err)) from None
    return parse(data, str(path))


def parse(data: Any, source: str = "claims") -> ClaimSet:
    """Validate a parsed claims document and resolve every claim into its parts."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        lines = [f"{'/'.join(map(str, e.path)) or '(top level)'}: {e.message[:300]}" for e in errors]
        raise ClaimsError(f"{source} does not follow claims.schema.yaml:\n  - " + "\n  - ".join(lines))
    problems: list[str] = []
    claims, seen = [], set()
    for entry in data["claims"]:
        cid = entry["id"]
        if cid in seen:
            problems.append(f"{cid}: the id is used twice")
        seen.add(cid)
        try:
            claims.append(_claim(entry, data["default_margins"]))
        except ClaimsError as err:
            problems.append(f"{cid}: {err}")
    if problems:
        raise ClaimsError(f"{source} has claims that do not match the paper's tables:\n  - " + "\n  - ".join(problems))
    return ClaimSet(tuple(claims), int(data["published_seeds"]), dict(data["default_margins"]),
                    tuple(data["not_checkable"]))


# ---------------------------------------------------------------------------------------------
# one claim


def _claim(e: Mapping[str, Any], margins: Mapping[str, float]) -> Claim:
    kind, metric = e["kind"], e["metric"]
    table, figure = e.get("table"), e.get("figure")
    if figure and metric not in FIGURE_METRICS:
        raise ClaimsError(f"a figure claim measures one of {list(FIGURE_METRICS)}, not {metric!r}")
    if table and metric in FIGURE_METRICS:
        raise ClaimsError(f"{metric!r} is a figure's number; give the claim figure: 2, not a table")
    if kind == "significantly_greater" and metric != "top1":
        raise ClaimsError("significance needs the printed std, which the tables give for top-1 only")
    equivalence = kind in ("comparable", "value")  # tested against a margin
    if equivalence and e.get("margin") is None and metric not in margins:
        raise ClaimsError(f"a {kind} claim needs a margin: none declared and no default_margins entry for {metric!r}")
    if e.get("quoted") and kind != "comparable":
        raise ClaimsError("quoted values go with a comparable claim (A's value, then B's)")
    parts = _figure_parts(e) if figure else _table_parts(e, kind, metric)
    if e.get("quoted") and len(e["quoted"]) != 2 * len(parts):
        raise ClaimsError(f"quoted has {len(e['quoted'])} numbers; the claim compares {len(parts)} pair(s)")
    return Claim(
        id=e["id"], section=e["section"], quote=" ".join(e["quote"].split()),
        stated=None if e["stated"] is None else Decimal(e["stated"]), kind=kind, metric=metric,
        table=table, figure=figure, parts=tuple(parts),
        margin=float(e.get("margin", margins.get(metric))) if equivalence else None,
        bound=e.get("bound"), quoted=tuple(Decimal(q) for q in e.get("quoted") or ()),
        expected=e.get("expected"), note=" ".join(str(e.get("note", "")).split()),
    )


def _sides(e: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    if "pairs" in e:
        return [(p["a"], p["b"]) for p in e["pairs"]]
    return [(e["a"], e.get("b"))]


def _union(table: int, side: Any, group: Mapping[str, str]) -> list[Row]:
    selectors = side if isinstance(side, list) else [side]
    found: list[Row] = []
    for s in selectors:
        found += [r for r in select(table, s, group) if r not in found]
    return found


def _groups(table: int, per: list[str]) -> list[dict[str, str]]:
    if not per:
        return [{}]
    out: list[dict[str, str]] = []
    for r in printed_table(table):
        g = {k: r.fields[k] for k in per}
        if g not in out:
            out.append(g)
    return out


def _series(rows: list[Row]) -> list[list[Row]]:
    """Rows grouped into one series per model (everything but depth and label equal), by depth."""
    out: dict[tuple, list[Row]] = {}
    for r in rows:
        ident = (r.table,) + tuple(r.fields[k] for k in FIELDS if k not in ("depth", "label"))
        out.setdefault(ident, []).append(r)
    return [sorted(s, key=lambda r: int(r.fields["depth"])) for s in out.values()]


def _table_parts(e: Mapping[str, Any], kind: str, metric: str) -> list[Part]:
    table, per = e["table"], list(e.get("per") or [])
    if kind == "slope_greater" and "depth" in per:
        raise ClaimsError("a slope over depth cannot be grouped per depth")
    parts: list[Part] = []
    for group in _groups(table, per):
        for a_side, b_side in _sides(e):
            if a_side == "others":
                raise ClaimsError("side a cannot be 'others'")
            a_rows = _union(table, a_side, group)
            if not a_rows:
                continue
            if b_side == "others":
                b_rows = [r for r in printed_table(table) if r not in a_rows
                          and all(r.fields[k] == v for k, v in group.items())]
            else:
                b_rows = _union(table, b_side, group) if b_side is not None else []
            if b_side is not None and not b_rows:
                raise ClaimsError(f"side b matches no row in the group {group or 'of the whole table'}")
            parts += _pairs(kind, tuple(group.items()), a_rows, b_rows)
    if not parts:
        raise ClaimsError(f"side a matches no row of Table {table}")
    for part in parts:
        for row in part.rows():
            _check_number(row, metric, kind)
    return parts


def _pairs(kind: str, group: tuple, a_rows: list[Row], b_rows: list[Row]) -> list[Part]:
    where = dict(group) or "the table"
    if kind == "slope_greater":
        a_series = _series(a_rows)
        if len(a_series) != 1:
            raise ClaimsError(f"side a of a slope must be one model, found {len(a_series)} in {where}")
        depths = tuple(int(r.fields["depth"]) for r in a_series[0])
        if len(set(depths)) < 2 or len(set(depths)) != len(depths):
            raise ClaimsError(f"a slope needs one row per depth at two or more depths, got depths {list(depths)}")
        out = []
        for s in _series(b_rows):
            if tuple(int(r.fields["depth"]) for r in s) != depths:
                raise ClaimsError(f"{s[0].name()}: its depths {[r.fields['depth'] for r in s]} are not "
                                  f"side a's {list(depths)}")
            out.append(Part(group, tuple(a_series[0]), tuple(s), depths))
        return out
    if kind in ("value", "at_most"):
        if b_rows:
            raise ClaimsError(f"a {kind} claim has no side b")
        if kind == "value" and len(a_rows) != 1:
            raise ClaimsError(f"a value claim names one row, side a matches {len(a_rows)} in {where}")
        return [Part(group, (r,), ()) for r in a_rows]
    if not b_rows:
        raise ClaimsError(f"a {kind} claim needs side b")
    if kind in SINGLE_PAIR and (len(a_rows) != 1 or len(b_rows) != 1):
        raise ClaimsError(f"a {kind} claim compares one row with one row; in {where} side a matches "
                          f"{len(a_rows)} and side b {len(b_rows)}")
    return [Part(group, (a,), (b,)) for a, b in product(a_rows, b_rows) if a is not b]


def _check_number(row: Row, metric: str, kind: str) -> None:
    column = row.column(metric)
    if column not in row.printed:
        raise ClaimsError(f"{row.name()}: Table {row.table} has no {column} column (metric {metric!r})")
    if not row.printed[column]:
        raise ClaimsError(f"{row.name()}: the paper prints '-' for {column}")
    if kind in ("significantly_greater", "value") and not row.printed.get("top1_std"):
        raise ClaimsError(f"{row.name()}: a {kind} claim needs the printed std, which Table {row.table} lacks")


def _figure_parts(e: Mapping[str, Any]) -> list[Part]:
    """A figure claim names models directly (dataset, arch, depth): the paper prints no rows for them."""
    def model(side: Any) -> tuple[Row, ...]:
        if not isinstance(side, dict) or set(side) != {"dataset", "arch", "depth"} or any(
                isinstance(v, list) for v in side.values()):
            raise ClaimsError("a figure claim names one model a side: exactly dataset, arch and depth")
        if side["arch"] not in METHODS:
            raise ClaimsError(f"unknown arch {side['arch']!r}; choose one of {list(METHODS)}")
        fields = {k: "" for k in FIELDS} | {k: str(v) for k, v in side.items()}
        fields["label"] = f"{METHODS[side['arch']].display}-{side['depth']}"
        return (Row(0, -1, fields, {}),)

    sides = _sides(e)
    return [Part((), model(a), model(b) if b is not None else ()) for a, b in sides]
