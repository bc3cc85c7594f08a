"""Beyond the paper: the official code's batch coupling (the grid's ``batch_coupling`` experiment).

The official DLA code refreshes every image of a batch with the DSU state of the batch's first
image (``dsu_state=first_image``); the paper's equations give every image its own state
(``per_image``). For DLA-B and DLA-L (CIFAR-100, depths 56 and 110 unless the grid says
otherwise): the best-epoch top-1 trained each way, and the ``first_image`` models' final top-1
at the recipe's test batch (100) against test batch 1 (where each image is its own first image),
each pair with a Welch test (``comparisons.csv``, Holm-corrected within the table).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ...methods import METHODS, family_of
from ..common import DATASET_NAMES, SYNTHETIC_NOTE, method_name
from ..comparisons import Pair
from ..context import Context
from ..index import ConfigEntry
from ..latex import NA, NOT_RUN_TEX, Table, cell_frame, fmt, mean_std, p_text, tex_escape
from ..registry import TableSpec
from ..tablekit import Builder, Stats, modal, seed_words

EXPERIMENT = "batch_coupling"
#: the models without a grid (run folders trained by hand): the experiment as params.yaml declares it
DEFAULT_AXES = {"datasets": ["cifar100"], "depths": [56, 110], "archs": ["dla_b", "dla_l"]}
PER, FIRST = "per_image", "first_image"
#: the test batch sizes compared: the recipe's (100) and one image at a time
BATCH, ALONE = 100, 1
TRAINED = ("Best top-1 by DSU state", "best_top1")
TESTED = (f"{FIRST}: final top-1 by test batch", "final_top1")
P_RULE = (r"$p$: two-sided Welch $t$-test over seeds, Holm-corrected within the table; $^{*}$ $p<0.05$, "
          r"$^{**}$ $p<0.01$, $^{***}$ $p<0.001$; " + NA + " when a side has fewer than two seeds.")


def models(ctx: Context) -> list[tuple[str, str, int]]:
    """(dataset, arch, paper depth) of every row: the experiment's groups (union), else the default."""
    groups = ctx.experiment(EXPERIMENT) or [DEFAULT_AXES]
    found: dict[tuple[str, str, int], None] = {}
    for g in groups:
        for arch in g["archs"]:
            for dataset in g["datasets"]:
                for depth in g["depths"]:
                    found[(dataset, arch, int(depth))] = None
    return sorted(found, key=lambda m: (m[0], m[1], m[2]))


def config_of(ctx: Context, dataset: str, arch: str, depth: int, state: str) -> ConfigEntry | None:
    """The plain model (knobs the paper's tables vary at their defaults) trained with ``state``; the
    experiment's config first, then the one with the fewest other knobs."""
    spec = METHODS.get(arch)
    if spec is None:
        return None
    family = family_of(dataset)
    plain = {k: spec.knob(k).default_for(family) for k in ctx.index.defining_knobs if k in spec.knob_names}
    found = [c for c in ctx.index.configs.values()
             if (c.dataset, c.arch, c.paper_depth, c.detector) == (dataset, arch, depth, None)
             and c.knob("dsu_state") == state and all(c.knob(k) == v for k, v in plain.items())]
    return min(found, key=lambda c: (EXPERIMENT not in c.experiments, len(c.knobs), c.config_id), default=None)


def _label(ctx: Context, dataset: str, arch: str, depth: int) -> str:
    datasets = {m[0] for m in models(ctx)}
    where = f" ({DATASET_NAMES.get(dataset, dataset)})" if len(datasets) > 1 else ""
    return f"{method_name(arch)}-{depth}{where}"


def pairs(ctx: Context) -> list[Pair]:
    """Per row: first_image against per_image (best top-1); first_image at test batch 100 against 1."""
    out = []
    for position, (dataset, arch, depth) in enumerate(models(ctx)):
        per, first = (config_of(ctx, dataset, arch, depth, s) for s in (PER, FIRST))
        per_id, first_id = (c.config_id if c else "" for c in (per, first))
        label = _label(ctx, dataset, arch, depth)
        out.append(Pair(position, label, first_id, "best_top1", f"{label} {PER}", PER, per_id, "best_top1",
                        "the official code's batch coupling against the paper's per-image equations"))
        out.append(Pair(position, label, first_id, f"final_top1_batch{BATCH}", f"{label} at test batch {ALONE}",
                        f"batch {ALONE}", first_id, f"final_top1_batch{ALONE}",
                        "a first_image model's score depends on the other images of its test batch"))
    return out


def _mean_std(summary: pd.DataFrame, config_id: str, column: str) -> tuple[float, float, int]:
    hit = summary[summary.config_id == config_id] if config_id else summary.iloc[:0]
    if hit.empty or int(hit.iloc[0].n_seeds) == 0:
        return math.nan, math.nan, 0
    s = hit.iloc[0]
    return float(s[f"{column}_mean"]), float(s[f"{column}_std"]), int(s.n_seeds)


def _cell(mean: float, std: float, n: int, modal_n: int) -> str:
    if not n:
        return NOT_RUN_TEX
    text = mean_std(mean, std) or NA  # NA: the runs did not record the metric (not evaluated at that batch)
    return text + (f" {{\\scriptsize(n={n})}}" if n != modal_n else "")


def _p(line: Any) -> str:
    if line is None:
        return NA
    return p_text(line.p_holm) + (f"$^{{{line.stars}}}$" if line.stars else "")


def build(b: Builder) -> Table:
    comparisons = b.frames.comparisons
    lines = comparisons[comparisons.table == TABLE.name] if comparisons is not None else pd.DataFrame()
    cols = [(TRAINED[0], tex_escape(PER)), (TRAINED[0], tex_escape(FIRST)), (TRAINED[0], r"$\Delta$"),
            (TRAINED[0], "$p$"), (tex_escape(TESTED[0]), str(BATCH)), (tex_escape(TESTED[0]), str(ALONE)),
            (tex_escape(TESTED[0]), r"$\Delta$"), (tex_escape(TESTED[0]), "$p$")]
    records, ran, configs = [], [], []
    shown = models(b.ctx)
    modal_n = modal([b.stats(c.config_id).n for m in shown for s in (PER, FIRST) if (c := config_of(b.ctx, *m, s))])
    for position, (dataset, arch, depth) in enumerate(shown):
        per, first = (config_of(b.ctx, dataset, arch, depth, s) for s in (PER, FIRST))
        configs += [c.config_id for c in (per, first) if c]
        found = lines[lines.position == position] if len(lines) else lines
        trained = next((l for l in found.itertuples(index=False) if l.partner_metric == "best_top1"), None)
        tested = next((l for l in found.itertuples(index=False) if l.partner_metric != "best_top1"), None)
        a = _mean_std(b.summary, per.config_id if per else "", "best_top1")
        f = _mean_std(b.summary, first.config_id if first else "", "best_top1")
        t100 = _mean_std(b.summary, first.config_id if first else "", f"final_top1_batch{BATCH}")
        t1 = _mean_std(b.summary, first.config_id if first else "", f"final_top1_batch{ALONE}")
        ran += [b.stats(c.config_id) for c in (per, first) if c]
        cells = {cols[0]: _cell(*a, modal_n), cols[1]: _cell(*f, modal_n),
                 cols[2]: fmt(f[0] - a[0]) or NA if a[2] and f[2] else NA, cols[3]: _p(trained),
                 cols[4]: _cell(*t100, modal_n), cols[5]: _cell(*t1, modal_n),
                 cols[6]: fmt(t100[0] - t1[0]) or NA if t100[2] else NA, cols[7]: _p(tested)}
        records.append(((tex_escape(_label(b.ctx, dataset, arch, depth)),), cells))
    cells = cell_frame(records, cols, "Model")
    mask = pd.DataFrame(False, index=cells.index, columns=cells.columns)
    return Table(TABLE.name, cells, mask, _caption(b, [s for s in ran if s.n], configs), "l" + "r" * len(cols),
                 fit_width=True)


def _caption(b: Builder, ran: list[Stats], configs: list[str]) -> str:
    datasets = sorted({m[0] for m in models(b.ctx)})
    parts = [r"Beyond the paper: the official code's batch coupling on "
             + ", ".join(DATASET_NAMES.get(d, d) for d in datasets) + ". "
             r"The official DLA code refreshes every image of a batch with the DSU state of the batch's first image "
             r"(\texttt{first\_image}); the paper's equations give each image its own state (\texttt{per\_image})."]
    if b.ctx.synthetic_profile or any(s.n_synthetic for s in ran):
        depth = b.ctx.depth_note(sorted({m[2] for m in models(b.ctx)}))
        parts.append(r"\textbf{" + SYNTHETIC_NOTE.capitalize() + "}" + (f" ({depth})" if depth else "") + ".")
    if ran:
        parts.append(f"Ours ({b.ctx.source_words}): mean $\\pm$ sample std over {seed_words(ran)}.")
    else:
        parts.append(f"No finished runs of the experiment in {b.ctx.source_words} yet (\\textit{{not run}}).")
    parts.append(r"Left: best-epoch top-1 (the official code's metric) of models trained each way, "
                 r"$\Delta$ = \texttt{first\_image} $-$ \texttt{per\_image}. Right: the final \texttt{first\_image} "
                 rf"models evaluated again at test batch {BATCH} (the recipe's) and {ALONE} (each image its own first "
                 rf"image), $\Delta$ = batch {BATCH} $-$ batch {ALONE}; {NA} where a run was not evaluated at that "
                 r"batch. " + P_RULE + " Every test is in comparisons.csv.")
    return " ".join(parts)


TABLE = TableSpec("coupling", 7, "coupling", build, experiment=EXPERIMENT, pairs=pairs)
