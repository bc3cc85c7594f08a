"""Checkpoints of a run folder and the random-number state they carry.

``checkpoint.pt`` is written atomically and the one before it kept as ``checkpoint.prev.pt``, so a
file truncated by a kill falls back to the previous good one. Loading uses ``weights_only=True``:
a checkpoint is data, never code.
"""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import atomic

CHECKPOINT, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"
CHECKPOINT_FORMAT = 3  # 3: ``rng`` holds one state per process (2: rank 0's alone)
REQUIRED = {"format", "digest", "epoch", "batch", "model", "optimizer", "rng", "history", "partial", "elapsed"}


class CorruptCheckpointError(RuntimeError):
    pass


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_of_rank(payload: dict[str, Any], rank: int) -> dict[str, Any]:
    """The RNG states process ``rank`` saved (a format-2 checkpoint has one state, for every rank)."""
    states = payload["rng"]
    return states[rank] if isinstance(states, list) else states


def rank_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank``'s own random stream (drop-path masks), < 2^32 as numpy needs."""
    from .data.common import sample_seed

    return sample_seed(seed, 2**32 + rank, rank) % 2**32  # an epoch no data pass ever reaches


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(folder: Path, payload: dict[str, Any]) -> Path:
    """Write atomically, keeping the previous checkpoint as a fallback. The temporary name is
    unique per writer (host and pid), so even two writers would never share a half-written file;
    the run folder's lock (:mod:`dlarepro.runlock`) keeps a second writer out in the first place."""
    path, tmp = folder / CHECKPOINT, folder / f".{CHECKPOINT}.{socket.gethostname()}-{os.getpid()}.new"
    atomic.torch_save(payload, tmp)
    if path.exists():
        os.replace(path, folder / PREVIOUS)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, wrong types: all mean "unusable"
        raise CorruptCheckpointError(f"{path}: cannot be read ({type(err).__name__}: {str(err)[:200]})") from None
    if not isinstance(payload, dict) or not REQUIRED <= set(payload):
        missing = sorted(REQUIRED - set(payload)) if isinstance(payload, dict) else "everything"
        raise CorruptCheckpointError(f"{path}: not a dla-repro checkpoint (missing {missing})")
    return payload


def set_aside_other_data(folder: Path, names: list[str]) -> Path:
    """Move checkpoints made on other data (and, with the newest one, the history that goes with
    it) into ``folder/superseded-<time>/``: kept for inspection, never resumed."""
    target = folder / f"superseded-{time.strftime('%Y%m%dT%H%M%S')}"
    target.mkdir(exist_ok=True)
    for name in [*names, *(["history.csv"] if CHECKPOINT in names else [])]:
        if (folder / name).exists():
            os.replace(folder / name, target / name)
    return target


def find_resume_point(folder: Path, digest: str, data: str | None = None,
                      set_aside: bool = False) -> tuple[dict[str, Any] | None, str]:
    """The newest readable checkpoint of this run and a sentence saying what was chosen.

    ``data`` is the fingerprint of the data the run reads now: checkpoints recording another one
    were made on other data (regenerated or replaced since) and are not resumed; with
    ``set_aside`` (the process that writes) they are moved out of the way.
    """
    notes, other_data = [], []
    for name in (CHECKPOINT, PREVIOUS):
        path = folder / name
        if not path.exists():
            continue
        try:
            payload = read_checkpoint(path)
        except CorruptCheckpointError as err:
            notes.append(f"corrupt checkpoint ignored: {err}")
            continue
        if data and payload.get("data_fingerprint") not in (None, data):
            other_data.append(name)
            continue
        if payload["digest"] != digest:
            raise RuntimeError(
                f"{path} belongs to a different configuration (digest {payload['digest']} != {digest}); "
                f"use another out_dir or delete the folder to start over"
            )
        _note_other_data(folder, other_data, data, set_aside, notes)
        where = f"epoch {payload['epoch'] + 1}, batch {payload['batch']}"
        notes.append(f"resuming from {path} ({where})" + (" — the previous good one" if name == PREVIOUS else ""))
        return payload, "; ".join(notes)
    _note_other_data(folder, other_data, data, set_aside, notes)
    notes.append("no usable checkpoint: starting from scratch" if notes else "starting from scratch")
    return None, "; ".join(notes)


def _note_other_data(folder: Path, names: list[str], data: str | None, set_aside: bool, notes: list[str]) -> None:
    if names:
        where = set_aside_other_data(folder, names) if set_aside else folder
        notes.append(f"{', '.join(names)} made on other data (fingerprint differs from {data}): not resumed, "
                     f"moved to {where}")
