"""Table 3: COCO detection with Faster and Mask R-CNN. Our AP in every column the paper has, where
runs exist, beside the paper's numbers (quoted): box AP, AP50, AP75, then box AP of small, medium
and large objects for Faster R-CNN and mask AP, AP50, AP75 for Mask R-CNN (what the paper's last
three columns most likely hold for Mask R-CNN, as in MRLA)."""

from __future__ import annotations

import math

import pandas as pd

from ... import paper
from ..common import SYNTHETIC_NOTE
from ..comparisons import paper_pairs
from ..latex import NA, NOT_BUILT_TEX, NOT_RUN_TEX, Table, best_mask, cell_frame, fmt, numeric_frame, tex_escape
from ..registry import TableSpec
from ..tablekit import Builder, marks, run_notes, seed_words

#: the paper's columns (its CSV's names) and their headers: the last three are box AP by object size for
#: Faster R-CNN and (most likely) mask AP, AP50, AP75 for Mask R-CNN
PAPER_METRICS = [("ap", "AP"), ("ap50", "AP$_{50}$"), ("ap75", "AP$_{75}$"), ("aps", "AP$_{S}$/AP$^{m}$"),
                 ("apm", "AP$_{M}$/AP$^{m}_{50}$"), ("apl", "AP$_{L}$/AP$^{m}_{75}$")]
#: our metric (metrics.json) in each of the paper's columns, per detector
OUR_METRICS = {
    "faster_rcnn": ("bbox_ap", "bbox_ap50", "bbox_ap75", "bbox_aps", "bbox_apm", "bbox_apl"),
    "mask_rcnn": ("bbox_ap", "bbox_ap50", "bbox_ap75", "segm_ap", "segm_ap50", "segm_ap75"),
}
DETECTORS = {"faster_rcnn": "Faster R-CNN", "mask_rcnn": "Mask R-CNN"}


def detection_stats(b: Builder, r) -> tuple[str, int, int, dict[str, float]]:
    """(config id or '', finished seeds, synthetic seeds, means of params and each detection metric) of a row."""
    config = b.find(TABLE, dataset="coco", detector=r.detector, arch=r.arch, paper_depth=int(r.depth)) if r.arch else None
    hit = b.summary[b.summary.config_id == config.config_id] if config else b.summary.iloc[:0]
    if hit.empty or int(hit.iloc[0].n_seeds) == 0:
        return (config.config_id if config else ""), 0, 0, {}
    row = hit.iloc[0]
    means = {k[: -len("_mean")]: float(row[k]) for k in row.index if k.startswith(("bbox_", "segm_"))}
    return config.config_id, int(row.n_seeds), int(row.n_synthetic), {**means, "params": float(row.params)}


def build(b: Builder) -> Table:
    t = paper.load_table(TABLE.number)
    ours = [("Ours", m) for _, m in PAPER_METRICS]
    cols = [("Ours", r"\#P(M)")] + ours + [("Paper (quoted)", r"\#P(M)")] + [("Paper (quoted)", m) for _, m in PAPER_METRICS]
    records, numbers, ran, configs = [], [], [], []
    for r in t.itertuples(index=False):
        config_id, n, _, means = detection_stats(b, r)
        configs += [config_id] if config_id else []
        if n:
            ran.append(b.stats(config_id))
        cells: dict = {}
        nums: dict = {}
        cells[cols[0]] = fmt(means["params"] / 1e6, 1) if n else (NOT_RUN_TEX if r.arch else NOT_BUILT_TEX)
        for key, col in zip(OUR_METRICS[r.detector], ours):
            if n:
                cells[col] = (fmt(means.get(key), 1) or NA) + (marks(ran[-1]) if col == ours[0] else "")
                nums[col] = means.get(key, math.nan)
            else:
                cells[col] = NOT_RUN_TEX if r.arch else NOT_BUILT_TEX
        cells[cols[len(ours) + 1]] = fmt(r.params_m, 1)
        for (key, _), col in zip(PAPER_METRICS, cols[len(ours) + 2:]):
            cells[col] = fmt(getattr(r, key), 1) or NA
            nums[col] = getattr(r, key)
        records.append(((DETECTORS[r.detector], str(r.depth), tex_escape(r.label)), cells))
        numbers.append(((), nums))
    cells = cell_frame(records, cols, "Model")
    blocks = pd.Series([f"{a}/{d}" for a, d in zip(cells.index.get_level_values(0), cells.index.get_level_values(1))])
    mask = best_mask(numeric_frame(numbers, cells), blocks, ours + cols[len(ours) + 2:], digits=1)
    synthetic = any(s.n_synthetic for s in ran)
    ours_text = (rf"\textbf{{Ours}}: COCO AP (pycocotools) of {seed_words(ran)}, each backbone initialised from our "
                 r"ImageNet run of the same model. " if ran else
                 r"\textbf{Ours}: no detection runs exist yet (\textit{not run}). ")
    caption = (r"Object detection on COCO val2017 with Faster R-CNN and Mask R-CNN (paper's Table~3). "
               + ours_text + (r"\textbf{" + SYNTHETIC_NOTE.capitalize() + "}. " if synthetic else "")
               + run_notes(ran) + " "
               + r"\textbf{Paper (quoted)}: as published. AP, AP$_{50}$, AP$_{75}$: box AP. The last three "
               r"columns: for Faster R-CNN box AP of small, medium and large objects (AP$_{S}$, AP$_{M}$, "
               r"AP$_{L}$); for Mask R-CNN ours are the mask AP, AP$_{50}$ and AP$_{75}$ (AP$^{m}$, "
               r"AP$^{m}_{50}$, AP$^{m}_{75}$): the paper heads them AP$_{S}$, AP$_{M}$, AP$_{L}$ for both "
               r"detectors, but its Mask R-CNN numbers there are most likely mask AP (as in MRLA). "
               + b.dsu_words(configs) + " "
               + rf"\textit{{n/b}}: a method we do not implement; {NA}: not given, or no object of that size "
               r"in the images. Bold: best of each column within a block. Each row against the rows the paper "
               r"compares it with (Welch $p$ on box AP, two seeds a side needed; the paper ran one per model): "
               r"comparisons.csv.")
    return Table(TABLE.name, cells, mask, caption, "lll" + "r" * len(cols), fit_width=True)


TABLE = TableSpec("table3", 3, "coco", build, experiment="table3", pairs=paper_pairs(3), landscape=True)
