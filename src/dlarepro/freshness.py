"""Is a run folder still what the grid plans? Stale folders are set aside, never reported.

A folder is **stale** when what it was trained with differs from the run the grid now plans:

* its resolved config (``config.yaml``, written by the trainer; else ``run.yaml``) has another
  semantic digest than the planned config (:func:`dlarepro.runconfig.config_digest`: paths,
  devices and worker counts do not count), e.g. after an edit of a recipe or of a profile's
  ``overrides``;
* or, for a finished run, ``metrics.json`` records a data fingerprint other than the data's
  fingerprint now (the dataset was regenerated or replaced under it).

``dla-repro submit`` moves a stale folder to ``results/<profile>/superseded/<run>-<time>/`` (with
``SUPERSEDED.txt`` saying why) and trains the run again; ``dla-repro grid status`` lists stale
runs; reports must leave them out (see :func:`check`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .runconfig import config_digest, semantic_config

SUPERSEDED = "superseded"


@dataclass
class Freshness:
    """``status``: ``absent`` (no folder or nothing trained), ``fresh`` or ``stale``; ``reasons`` say why."""

    status: str
    reasons: list[str] = field(default_factory=list)
    finished: bool = False

    @property
    def stale(self) -> bool:
        return self.status == "stale"


def _yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def trained_config(folder: Path) -> dict[str, Any] | None:
    """The resolved config the folder was trained with (``config.yaml``, else ``run.yaml``'s)."""
    config = _yaml(folder / "config.yaml")
    if isinstance(config, dict):
        return config
    record = _yaml(folder / "run.yaml")
    if isinstance(record, dict) and isinstance(record.get("config"), dict):
        return record["config"]
    return None


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 6) -> list[str]:
    """``key: old -> new`` for every semantic key that differs (at most ``limit`` listed)."""
    a, b = semantic_config(old), semantic_config(new)
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
    shown = [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in keys[:limit]]
    return shown + ([f"... and {len(keys) - limit} more"] if len(keys) > limit else [])


def _metrics(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / "metrics.json").read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def check(folder: str | Path, planned: Mapping[str, Any], data_fingerprint: str | None = None) -> Freshness:
    """Compare run folder ``folder`` with the ``planned`` resolved config (and, when given, the
    current data fingerprint). Torch-free and cheap: a few small files are read."""
    folder = Path(folder)
    metrics = _metrics(folder)
    trained = trained_config(folder)
    finished = metrics is not None
    if trained is None and not finished:
        return Freshness("absent")
    reasons = []
    # without config.yaml / run.yaml (a folder put together by hand) there is no config to compare
    if trained is not None and config_digest(trained) != config_digest(planned):
        reasons.append("config changed (" + "; ".join(config_changes(trained, planned)) + ")")
    recorded = ((metrics or {}).get("data") or {}).get("fingerprint")
    if finished and data_fingerprint and recorded and recorded != data_fingerprint:
        reasons.append(f"data changed (trained on fingerprint {recorded}, the data is now {data_fingerprint})")
    return Freshness("stale" if reasons else "fresh", reasons, finished)


def set_aside(folder: str | Path, superseded_root: str | Path, reasons: list[str]) -> Path:
    """Move a stale run folder to ``superseded_root/<name>-<time>/`` (kept, not deleted); the move
    is one rename, so the run folder is either complete at its place or gone from it."""
    folder, root = Path(folder), Path(superseded_root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = root / f"{folder.name}-{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = root / f"{folder.name}-{stamp}-{n}"
    (folder / "SUPERSEDED.txt").write_text(f"set aside {time.strftime('%Y-%m-%dT%H:%M:%S')} from {folder}:\n"
                                          + "".join(f"- {r}\n" for r in reasons))
    os.replace(folder, target)
    return target


def superseded_root(run_folder: str | Path) -> Path:
    """``results/<profile>/superseded`` for a folder ``results/<profile>/runs/<run>``."""
    return Path(run_folder).resolve().parent.parent / SUPERSEDED
