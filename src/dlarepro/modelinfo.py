"""Parameter and MAC counts of our models, and the check against the paper's #P columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from . import paper
from .methods import check_model_args, display_name
from .models import build_model

INPUT_SIZE = {"cifar10": 32, "cifar100": 32, "imagenet": 224}

# Where our exact count, rounded as the paper rounds, differs from a printed #P on purpose.
KNOWN_DIFFERENCES = {  # (table, arch, depth, dataset, knobs) -> why
    (1, "dla_l", 56, "cifar100", ""): "official code has 825,840 (0.83 M); the paper prints 0.82 M",
    (4, "dla_l", 110, "cifar100", ""): "the paper's DSU row prints 1.39 M, the CIFAR-10 count of DLA-L-110 "
    "(1,391,538); on CIFAR-100 it has 1,414,668 (1.41 M, as Table 1 prints; the RNN row's 1.41 M is smaller)",
    (2, "dla_l", 50, "imagenet", ""): "official ImageNet code uses DSU reduction 16 (28.58 M); the paper's "
    "27.2 M matches reduction 32 (27.19 M), while its DLA-L-101 (47.8 M) matches 16",
}


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: torch.nn.Module, dataset: str) -> int:
    """Multiply-accumulates of one forward pass on one input, by torch's own FLOP counter
    (convolutions and matrix products; element-wise work is not counted, as in the paper)."""
    size = INPUT_SIZE[dataset]
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size, device=device))
    return counter.get_total_flops() // 2


def meta_counts(arch: str, depth: int, dataset: str, **knobs: Any) -> tuple[int, int]:
    """(parameters, MACs) without allocating or initialising weights: the model is built on the
    meta device (shapes only), which makes the ImageNet models' counts take a fraction of a second."""
    with torch.device("meta"):
        model = build_model(arch, depth, dataset, **knobs)
    return count_params(model), count_macs(model, dataset)


@dataclass
class ModelInfo:
    arch: str
    depth: int
    dataset: str
    knobs: dict[str, Any]
    params: int
    macs: int | None

    @property
    def name(self) -> str:
        return display_name(self.arch, self.depth, **self.knobs)


def model_info(arch: str, depth: int, dataset: str, macs: bool = True, **knobs: Any) -> ModelInfo:
    check_model_args(arch, depth, dataset, **knobs)
    model = build_model(arch, depth, dataset, **knobs)
    return ModelInfo(arch, depth, dataset, knobs, count_params(model), count_macs(model, dataset) if macs else None)


def _paper_rows() -> list[dict[str, Any]]:
    """Every paper row that names a model we build, with its printed #P (millions)."""
    rows: list[dict[str, Any]] = []
    for r in paper.load_table(1).itertuples():
        rows.append(dict(table=1, arch=r.arch, depth=r.depth, dataset=r.dataset, knobs={}, paper=r.params_m, digits=2))
    for r in paper.load_table(4).itertuples():
        knobs = {} if r.cell == "dsu" else {"cell": r.cell}
        rows.append(dict(table=4, arch=r.arch, depth=r.depth, dataset=r.dataset, knobs=knobs, paper=r.params_m, digits=2))
    for r in paper.load_table(6).itertuples():
        knobs = {} if r.cell in ("", "dia") else {"cell": r.cell}
        rows.append(dict(table=6, arch=r.arch, depth=r.depth, dataset=r.dataset, knobs=knobs, paper=r.params_m, digits=2))
    for r in paper.load_table(2).itertuples():
        if r.arch:
            rows.append(dict(table=2, arch=r.arch, depth=r.depth, dataset="imagenet", knobs={}, paper=r.params_m,
                             digits=1))
    return rows


def parameter_check(progress=None) -> pd.DataFrame:
    """Our exact count for every paper model next to the paper's #P; ``status`` is ``ok``,
    ``known`` (an explained difference, see ``note``) or ``MISMATCH``."""
    rows, cache = _paper_rows(), {}
    out = []
    for i, row in enumerate(rows):
        key = (row["arch"], row["depth"], row["dataset"], tuple(sorted(row["knobs"].items())))
        if key not in cache:
            cache[key] = count_params(build_model(row["arch"], row["depth"], row["dataset"], **row["knobs"]))
        params = cache[key]
        ours = round(params / 1e6, row["digits"])
        knob_text = ",".join(f"{k}={v}" for k, v in sorted(row["knobs"].items()))
        note = KNOWN_DIFFERENCES.get((row["table"], row["arch"], row["depth"], row["dataset"], knob_text), "")
        status = "ok" if abs(ours - row["paper"]) < 1e-9 else ("known" if note else "MISMATCH")
        out.append(dict(table=row["table"], dataset=row["dataset"],
                        model=display_name(row["arch"], row["depth"], **row["knobs"]),
                        arch=row["arch"], depth=row["depth"], knobs=knob_text, params=params,
                        ours_m=ours, paper_m=row["paper"], status=status, note=note if status != "ok" else ""))
        if progress:
            progress(i + 1, len(rows))
    return pd.DataFrame(out)
