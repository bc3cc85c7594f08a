"""Which row the paper compares each row of a table with (``resources/paper/comparisons.yaml``):
the partners a table's p column tests each row against, and the star rule of the captions.

``partners(table, rows)`` takes a table's rows as a DataFrame with the fields ``dataset``,
``arch``, ``depth`` (or ``paper_depth``) and, where the table has them, ``detector``, ``cell``,
``sigma``, ``label``; it returns, for each row, its partners: the row key to look the partner up by
(:func:`dlarepro.claims.rows.row_key`), how to name it, and why the paper pairs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

import pandas as pd

from .. import yamlfile
from .rows import FIELDS, Row, matches, printed_table, select
from .spec import ClaimsError, schema as claims_schema
from .stats import ALPHA

#: the star rule every table caption states
STAR_RULE = (f"p: two-sided Welch t-test over seeds of each row against the row the paper compares it with "
             f"(its partner, named with the p-value), Holm-corrected within the table; * p < {ALPHA:g}, "
             f"** p < 0.01, *** p < 0.001; -- when a side has fewer than two seeds.")


@dataclass(frozen=True)
class Partner:
    key: str | None   # the partner's row key; None when this project does not build it
    label: str        # e.g. "ResNet-56", "DSU cell in DLA-L-110", "ResNet-110 (Table 1)"
    why: str
    short: str = ""   # the partner's model without its depth, for a table cell: "ResNet", "DSU", "MRLA-L"


@lru_cache(maxsize=1)
def declaration() -> Mapping[int, Mapping[str, Any]]:
    """The validated comparisons.yaml: table -> {same, partners}."""
    import jsonschema

    root = resources.files("dlarepro").joinpath("resources")
    data = yamlfile.parse(root.joinpath("paper", "comparisons.yaml").read_text(encoding="utf-8"), "comparisons.yaml")
    schema = yamlfile.parse(root.joinpath("schemas", "comparisons.schema.yaml").read_text(encoding="utf-8"),
                            "comparisons.schema.yaml")
    schema["$defs"] = claims_schema()["$defs"]
    if isinstance(data, dict) and isinstance(data.get("tables"), dict):
        data = {**data, "tables": {str(k): v for k, v in data["tables"].items()}}
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        lines = [f"{'/'.join(map(str, e.path)) or '(top level)'}: {e.message[:300]}" for e in errors]
        raise ClaimsError("comparisons.yaml does not follow comparisons.schema.yaml:\n  - " + "\n  - ".join(lines))
    return {int(k): v for k, v in data["tables"].items()}


def _fields(record: Mapping[str, Any], table: int) -> dict[str, str]:
    out = {k: "" if record.get(k) is None or record.get(k) != record.get(k) else str(record.get(k)) for k in FIELDS}
    if not out["depth"] and record.get("paper_depth") is not None:
        out["depth"] = str(int(record["paper_depth"]))
    elif out["depth"]:
        out["depth"] = str(int(float(out["depth"])))
    if not out["dataset"]:
        out["dataset"] = {2: "imagenet", 3: "coco"}.get(table, "")
    if not out["label"]:  # a report's rows may lack labels: take the paper's for the same model
        for r in printed_table(table):
            if all(r.fields[k] == out[k] for k in ("dataset", "arch", "depth", "detector", "cell", "sigma")):
                out["label"] = r.fields["label"]
    return out


def partners_of(table: int, fields: Mapping[str, str]) -> list[Partner]:
    """The partners of one row of ``table`` (``fields``: its dataset, arch, depth, ...)."""
    spec = declaration().get(table)
    if spec is None:
        raise ValueError(f"no comparisons are declared for table {table!r}")
    row = Row(table, -1, dict(fields), {})
    out: list[Partner] = []
    for rule in spec["partners"]:
        if not matches(row, rule["rows"]):
            continue
        same = {k: fields[k] for k in spec["same"] if fields.get(k)}
        found = [r for r in select(table, rule["with"], same)
                 if not all(r.fields[k] == fields.get(k, "") for k in FIELDS)]
        if len(found) != 1:
            raise ClaimsError(f"comparisons.yaml, table {table}: the partner {rule['with']} of {fields} matches "
                              f"{len(found)} rows, not one")
        partner = found[0]
        label = partner.name().split(", ")[-1] + (f" (Table {partner.table})" if partner.table != table else "")
        out.append(Partner(partner.key, label, rule["why"], partner.model_name()))
    return out


def partners(table: int, rows: pd.DataFrame) -> list[list[Partner]]:
    """For each row of ``rows`` (a table's rows, in any order), its partners in the paper's comparisons."""
    return [partners_of(table, _fields(record, table)) for record in rows.to_dict("records")]


def partner_edges(table: int, rows: pd.DataFrame) -> pd.DataFrame:
    """The same as a long table: one line per (row, partner) with the row's position in ``rows``."""
    out = []
    for i, found in enumerate(partners(table, rows)):
        out += [{"row": i, "partner_key": p.key, "partner_label": p.label, "why": p.why} for p in found]
    return pd.DataFrame(out, columns=["row", "partner_key", "partner_label", "why"])
