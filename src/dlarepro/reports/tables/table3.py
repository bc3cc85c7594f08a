"""Table 3: COCO detection with Faster and Mask R-CNN. Our box (and mask) AP where runs exist,
beside the paper's numbers (quoted)."""

from __future__ import annotations

import math

import pandas as pd

from ... import paper
from ..common import SYNTHETIC_NOTE
from ..latex import NA, NOT_BUILT_TEX, NOT_RUN_TEX, Table, best_mask, cell_frame, fmt, numeric_frame, tex_escape
from ..registry import TableSpec
from ..tablekit import Builder, Stats, seed_words

PAPER_METRICS = [("ap", "AP"), ("ap50", "AP$_{50}$"), ("ap75", "AP$_{75}$"), ("aps", "AP$_{S}$"),
                 ("apm", "AP$_{M}$"), ("apl", "AP$_{L}$")]
OUR_METRICS = [("bbox_ap", "AP$^{b}$"), ("bbox_ap50", "AP$^{b}_{50}$"), ("bbox_ap75", "AP$^{b}_{75}$"),
               ("segm_ap", "AP$^{m}$")]
DETECTORS = {"faster_rcnn": "Faster R-CNN", "mask_rcnn": "Mask R-CNN"}


def detection_stats(b: Builder, r) -> tuple[int, int, dict[str, float]]:
    """(finished seeds, synthetic seeds, means of params and each detection metric) of a Table 3 row."""
    config = b.find(TABLE, dataset="coco", detector=r.detector, arch=r.arch, paper_depth=int(r.depth)) if r.arch else None
    hit = b.summary[b.summary.config_id == config.config_id] if config else b.summary.iloc[:0]
    if hit.empty or int(hit.iloc[0].n_seeds) == 0:
        return 0, 0, {}
    row = hit.iloc[0]
    means = {k[: -len("_mean")]: float(row[k]) for k in row.index if k.startswith(("bbox_", "segm_"))}
    return int(row.n_seeds), int(row.n_synthetic), {**means, "params": float(row.params)}


def build(b: Builder) -> Table:
    t = paper.load_table(TABLE.number)
    cols = ([("Ours", r"\#P(M)")] + [("Ours", m) for _, m in OUR_METRICS] + [("Paper (quoted)", r"\#P(M)")]
            + [("Paper (quoted)", m) for _, m in PAPER_METRICS])
    records, numbers, ran = [], [], []
    for r in t.itertuples(index=False):
        n, n_synthetic, means = detection_stats(b, r)
        if n:
            ran.append(Stats(n=n, n_synthetic=n_synthetic))
        cells: dict = {}
        nums: dict = {}
        cells[cols[0]] = fmt(means["params"] / 1e6, 1) if n else (NOT_RUN_TEX if r.arch else NOT_BUILT_TEX)
        for (key, _), col in zip(OUR_METRICS, cols[1:5]):
            if key.startswith("segm") and r.detector != "mask_rcnn":
                cells[col] = NA
            elif n:
                cells[col] = fmt(means.get(key), 1) or NA
                nums[col] = means.get(key, math.nan)
            else:
                cells[col] = NOT_RUN_TEX if r.arch else NOT_BUILT_TEX
        cells[cols[5]] = fmt(r.params_m, 1)
        for (key, _), col in zip(PAPER_METRICS, cols[6:]):
            cells[col] = fmt(getattr(r, key), 1) or NA
            nums[col] = getattr(r, key)
        records.append(((DETECTORS[r.detector], str(r.depth), tex_escape(r.label)), cells))
        numbers.append(((), nums))
    cells = cell_frame(records, cols, "Model")
    blocks = pd.Series([f"{a}/{d}" for a, d in zip(cells.index.get_level_values(0), cells.index.get_level_values(1))])
    mask = best_mask(numeric_frame(numbers, cells), blocks, cols[1:5] + cols[6:], digits=1)
    synthetic = any(s.n_synthetic for s in ran)
    ours_text = (rf"\textbf{{Ours}}: box AP, AP$_{{50}}$, AP$_{{75}}$ and mask AP (pycocotools) of "
                 rf"{seed_words(ran)}, each backbone initialised from our ImageNet run of the same model. "
                 if ran else r"\textbf{Ours}: no detection runs exist yet (\textit{not run}). ")
    caption = (r"Object detection on COCO val2017 with Faster R-CNN and Mask R-CNN (paper's Table~3). "
               + ours_text + (r"\textbf{" + SYNTHETIC_NOTE.capitalize() + "}. " if synthetic else "")
               + r"\textbf{Paper (quoted)}: as published. "
               r"The paper heads every column AP, AP$_{50}$, AP$_{75}$, AP$_{S}$, AP$_{M}$, AP$_{L}$, but for "
               r"Mask R-CNN the last three are most likely the mask AP, AP$_{50}$ and AP$_{75}$ (as in MRLA), "
               rf"not box AP$_{{S/M/L}}$. \textit{{n/b}}: a method we do not implement; {NA}: not applicable or "
               r"not given. Bold: best of each column within a block.")
    return Table(TABLE.name, cells, mask, caption, "lll" + "r" * len(cols), fit_width=True)


TABLE = TableSpec("table3", 3, "coco", build, experiment="table3")
