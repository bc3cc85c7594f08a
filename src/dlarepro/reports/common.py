"""Shared pieces of the reports: where outputs live, change-only atomic writes, method names and
colours, LaTeX escaping, and the error type the command line turns into one line on stderr."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import atomic
from .. import grid as gridlib
from .. import layout
from ..methods import METHODS as SPECS

DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}

NA = "--"                 # a statistic that cannot be computed (p-value with fewer than two seeds)

SYNTHETIC_NOTE = "synthetic data --- pipeline check, not a reproduction"
BEST_NOTE = ("Top-1 is the best test accuracy over all epochs, the number the paper and the official code report; "
             "choosing the maximum on the test set biases it upwards, so the final-epoch accuracy is shown beside it")


def method_names() -> dict[str, str]:
    """Registered methods in the paper's order -> the reader's name."""
    return {name: spec.display for name, spec in SPECS.items()}


def colour(arch: str) -> str:
    return SPECS[arch].colour if arch in SPECS else "black"


class ReportError(Exception):
    """A report cannot be made (missing inputs, a LaTeX error): the message says what to do."""


@dataclass(frozen=True)
class Context:
    """Which grid and profile a report describes, and where its inputs and outputs live."""

    grid: Mapping[str, Any]
    profile: str
    root: Path = field(default=Path("."))

    @classmethod
    def load(cls, grid_path: str | os.PathLike = "params.yaml", profile: str | None = None,
             root: str | os.PathLike = ".") -> "Context":
        try:
            g = gridlib.load(grid_path)
            name, _ = gridlib.profile_of(g, profile)
        except gridlib.GridError as err:
            raise ReportError(str(err)) from None
        return cls(g, name, Path(root))

    @property
    def settings(self) -> Mapping[str, Any]:
        return self.grid["profiles"][self.profile]

    @property
    def depth_map(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in (self.settings.get("depth_map") or {}).items()}

    def trained_depth(self, paper_depth: int) -> int:
        return self.depth_map.get(int(paper_depth), int(paper_depth))

    @property
    def synthetic_profile(self) -> bool:
        return self.settings.get("data") == "synthetic"

    @property
    def results_dir(self) -> Path:
        return self.root / layout.results_root(self.profile)

    @property
    def runs_dir(self) -> Path:
        return self.results_dir / "runs"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports" / self.profile

    def runs(self) -> dict[str, gridlib.Run]:
        return gridlib.expand(self.grid, self.profile)

    def config_id(self, dataset: str, arch: str, paper_depth: int, knobs: Mapping[str, Any] | None = None,
                  detector: str | None = None) -> str:
        """The config id the grid gives a paper row (default knob values dropped, as the grid does)."""
        from ..identity import config_id_of

        given = {k: v for k, v in (knobs or {}).items() if v not in (None, "")}
        kept = SPECS[arch].id_knobs("imagenet" if detector else dataset, given)
        # the depth map stands for CIFAR depths only (as in the grid)
        depth = self.trained_depth(paper_depth) if dataset in gridlib.CIFAR else int(paper_depth)
        return config_id_of(dataset, arch, depth, kept, detector)

    def depth_note(self, paper_depths) -> str:
        """'rows 20/56/110 trained at depths 11/20/29' when the profile trains other depths, else ''."""
        depths = sorted({int(d) for d in paper_depths})
        if not any(self.trained_depth(d) != d for d in depths):
            return ""
        noun = "depths" if len(depths) > 1 else "depth"
        return (f"rows {'/'.join(map(str, depths))} trained at {noun} "
                f"{'/'.join(str(self.trained_depth(d)) for d in depths)}")


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


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_RE = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIAL))


def tex_escape(text: Any) -> str:
    """Plain text -> LaTeX source that prints it (underscores, percent signs, ...)."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group()], str(text))


def fmt(value: Any, digits: int = 2) -> str:
    """A number with fixed decimals, or '' when it is missing (callers put a mark there)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return ""
    if value != value:  # NaN
        return ""
    return f"{value:.{digits}f}"


def is_number(value: Any) -> bool:
    try:
        return float(value) == float(value)
    except (TypeError, ValueError):
        return False
