"""Shared pieces of the reports: change-only atomic writes, the names and colours of methods (from
:mod:`dlarepro.methods` only), the notes every output repeats, and the error type the command
line turns into one line on stderr."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .. import atomic
from ..methods import METHODS

DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet", "coco": "COCO"}
#: the colour of a method that has runs but no spec (still drawn, never dropped)
UNREGISTERED_COLOUR = "black"
#: the output name of a report of hand-trained run folders (``--runs``) when ``--name`` is not given
DEFAULT_RUNS_NAME = "manual"

SYNTHETIC_NOTE = "synthetic data --- pipeline check, not a reproduction"
BEST_NOTE = ("Top-1 is the best test accuracy over all epochs, the official code's metric (the paper never says "
             "which epoch it reports); choosing the maximum on the test set biases it upwards, so the final-epoch "
             "accuracy is shown beside it")


def method_name(arch: str) -> str:
    """The reader's name of a method (its spec's ``display``; the registry name if it has none)."""
    return METHODS[arch].display if arch in METHODS else arch


def method_title(arch: str) -> str:
    """A panel title: the name and, for layer attention, whether it is static or dynamic."""
    return METHODS[arch].title() if arch in METHODS else arch


def colour(arch: str) -> str:
    return METHODS[arch].colour if arch in METHODS else UNREGISTERED_COLOUR


def method_order(archs: Iterable[str]) -> list[str]:
    """``archs`` in the registry's (the paper's) order; any without a spec after them, sorted."""
    wanted = set(archs)
    return [a for a in METHODS if a in wanted] + sorted(wanted - set(METHODS))


class ReportError(Exception):
    """A report cannot be made (missing inputs, a LaTeX error): the message says what to do."""


def write_if_changed(path: str | os.PathLike, data: bytes | str) -> bool:
    """Write ``data`` atomically unless the file already holds exactly these bytes; True if written."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic.write_bytes(path, data)
    return True
