"""Figure 2's claims as numbers: how much the stage-3 layer attention changes with the input, how
spread each row is, and how much of a row lies off its largest score.

For one run, from the per-image attention scores of each block of stage 3 (``[images, heads, t]``,
block ``i`` attending over ``t = i`` layers):

- ``input_std``: the std of each attention score (block, head, attended layer) across the test
  images, averaged over all scores;
- ``entropy``: the entropy (nats) of each row (one image's, one head's distribution over the
  layers), averaged over images and heads, then over the blocks;
- ``entropy_normalised``: the same with each row's entropy divided by its maximum, ``log t``;
- ``off_peak``: the share of each row of the displayed matrix (the mean over heads and images)
  off its largest entry, averaged over the blocks.

The first block attends to one layer only (its score is always 1, its entropy 0, the same for
every method), so every average runs over the blocks with ``t >= 2``: the rows that "reuse
information from previous layers" in the paper's words. A classification run stores what these
need in ``attention_stage3.npz`` (``std_block<i>``, ``entropy_block<i>`` beside the means); files
written before those arrays existed give ``None``.
"""

from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import numpy as np

#: attention_stats' names -> the claims' metric names (see claims.yaml)
METRICS = {"input_std": "attention_input_std", "entropy": "attention_entropy", "off_peak": "attention_off_peak"}


def _summary(stds: Sequence[np.ndarray], entropies: Sequence[np.ndarray], matrix: np.ndarray) -> dict[str, float]:
    """The run's numbers from per-block stds ``[heads, t]``, mean entropies ``[heads]`` and the mean matrix."""
    rows = [i for i, s in enumerate(stds) if s.shape[-1] >= 2]
    if not rows:
        nan = float("nan")
        return {"input_std": nan, "entropy": nan, "entropy_normalised": nan, "off_peak": nan}
    scores = np.concatenate([stds[i].ravel() for i in rows])
    entropy = [float(np.mean(entropies[i])) for i in rows]
    peak = [1.0 - float(np.nanmax(matrix[i, : stds[i].shape[-1]])) for i in rows]
    return {
        "input_std": float(scores.mean()),
        "entropy": float(np.mean(entropy)),
        "entropy_normalised": float(np.mean([e / math.log(stds[i].shape[-1]) for e, i in zip(entropy, rows)])),
        "off_peak": float(np.mean(peak)),
    }


def attention_stats(blocks: Sequence[np.ndarray]) -> dict[str, float]:
    """The run's numbers from the per-image scores of each block of stage 3, ``[images, heads, t]``."""
    blocks = [np.asarray(b, dtype=float) for b in blocks]
    for i, b in enumerate(blocks):
        if b.ndim != 3 or b.shape[0] < 1:
            raise ValueError(f"block {i + 1}: expected scores [images, heads, t], got shape {b.shape}")
    stds = [b.std(axis=0) for b in blocks]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropies = [-(np.where(b > 0, b * np.log(np.where(b > 0, b, 1.0)), 0.0)).sum(-1).mean(0) for b in blocks]
    n = len(blocks)
    matrix = np.full((n, max((b.shape[-1] for b in blocks), default=0)), np.nan)
    for i, b in enumerate(blocks):
        matrix[i, : b.shape[-1]] = b.mean(axis=(0, 1))
    return _summary(stds, entropies, matrix)


def stats_from_file(path: str | os.PathLike) -> dict[str, float] | None:
    """The run's numbers from its ``attention_stage3.npz``; None when the file predates the std and
    entropy arrays (it still draws the figure) or cannot be read."""
    try:
        with np.load(path) as npz:
            names = set(npz.files)
            n = sum(1 for k in names if k.startswith("block") and k[5:].isdigit())
            if n == 0 or not all(f"std_block{i}" in names and f"entropy_block{i}" in names for i in range(1, n + 1)):
                return None
            stds = [np.asarray(npz[f"std_block{i}"], dtype=float) for i in range(1, n + 1)]
            entropies = [np.asarray(npz[f"entropy_block{i}"], dtype=float) for i in range(1, n + 1)]
            matrix = np.asarray(npz["scores"], dtype=float)
    except (OSError, ValueError, KeyError):
        return None
    return _summary(stds, entropies, matrix)


def over_seeds(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std, n) of one number over seeds; std NaN below two seeds."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return (float(v.mean()) if len(v) else math.nan, float(v.std(ddof=1)) if len(v) >= 2 else math.nan, len(v))


def caption_text(per_method: Mapping[str, Sequence[Mapping[str, float]]]) -> str:
    """One sentence for Figure 2's caption: per method (display name -> each seed's stats), the mean ±
    std over seeds of how much the attention changes with the input and of the row entropy."""
    parts = []
    for name, runs in per_method.items():
        std_m, std_s, n = over_seeds([r["input_std"] for r in runs])
        ent_m, ent_s, _ = over_seeds([r["entropy"] for r in runs])
        if n == 0:
            parts.append(f"{name}: no run with per-image statistics")
            continue
        spread = (lambda m, s: f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}")
        parts.append(f"{name}: score std across test images {spread(std_m, std_s)}, row entropy "
                     f"{spread(ent_m, ent_s)} nats ({n} seed{'s' if n != 1 else ''})")
    return ("Mean ± std over seeds, blocks attending to two or more layers; " + "; ".join(parts) + ".") if parts else ""
