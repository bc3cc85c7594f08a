"""The kinds of run, and the one place that dispatches between them.

Classification and detection are siblings: each declares a :class:`~dlarepro.runconfig.RunKind`
(its config keys, resolver and training function). Code that handles any run (the command line,
the grid, submission, the submitit job) goes through :func:`kind_of`, :func:`resolve` and
:func:`train` here. Adding a kind is one package with a ``KIND`` and one line in :data:`KINDS`.
"""

from __future__ import annotations

from typing import Any, Mapping

from . import classification, detection
from .runconfig import RunKind

#: checked in order: the first kind whose ``matches`` accepts a config takes it
KINDS: dict[str, RunKind] = {kind.name: kind for kind in (detection.KIND, classification.KIND)}


def kind_of(config: Mapping[str, Any]) -> RunKind:
    return next(kind for kind in KINDS.values() if kind.matches(config))


def by_command(command: str) -> RunKind:
    return next(kind for kind in KINDS.values() if kind.command == command)


def resolve(run: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and resolve a run config of any kind (a ConfigError lists every problem)."""
    return kind_of(run).resolve(run)


def train(config: dict[str, Any], progress: bool | None = None) -> dict[str, Any]:
    """Train a run of any kind (resuming from its folder); return its metrics."""
    return kind_of(config).train(config, progress)
