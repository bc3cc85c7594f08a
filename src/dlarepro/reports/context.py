"""What a report describes (:class:`Context`) and where its inputs and outputs live.

A report describes either a profile of the declared grid (its planned runs: ``grid.plan``, read
once per context) or run folders a person trained by hand (``--runs``: each folder's
``run.yaml``). Either way the runs are indexed by their ids (:mod:`dlarepro.reports.index`);
nothing re-expands the grid or parses an id.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from .. import grid as gridlib
from .. import layout
from .common import DEFAULT_RUNS_NAME, ReportError
from .index import RunIndex
from .latex import tex_escape

#: a report's name becomes the folders results/<name>/ and reports/<name>/
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


class Context:
    """What a report describes and where its inputs and outputs live.

    ``Context.load(grid, profile)``: the declared runs of a profile; ``Context.of_runs(paths, name)``:
    run folders trained by hand. ``profile`` (the profile's name, or ``--name``) names the output
    folders ``results/<profile>/`` and ``reports/<profile>/``.
    """

    def __init__(self, profile: str, root: str | os.PathLike = ".", grid: Mapping[str, Any] | None = None,
                 run_paths: Iterable[str | os.PathLike] = ()):
        self.profile = profile
        self.root = Path(root)
        self.grid = grid
        self.run_paths = tuple(Path(p) for p in run_paths)

    @classmethod
    def load(cls, grid_path: str | os.PathLike = "params.yaml", profile: str | None = None,
             root: str | os.PathLike = ".") -> "Context":
        try:
            g = gridlib.load(grid_path)
            name, _ = gridlib.profile_of(g, profile)
        except gridlib.GridError as err:
            raise ReportError(str(err)) from None
        return cls(name, root, grid=g)

    @classmethod
    def of_runs(cls, paths: Iterable[str | os.PathLike], name: str = DEFAULT_RUNS_NAME,
                root: str | os.PathLike = ".") -> "Context":
        paths = tuple(paths)
        if not paths:
            raise ReportError("--runs needs at least one run folder (or a folder holding run folders)")
        if not NAME.fullmatch(name):
            raise ReportError(f"--name {name!r} must be one folder name (letters, digits, '.', '_', '-'; "
                              "not starting with '.' or '-')")
        return cls(name, root, run_paths=paths)

    # -- what is described --------------------------------------------------------------------
    @property
    def from_grid(self) -> bool:
        return self.grid is not None

    @functools.cached_property
    def index(self) -> RunIndex:
        """Every run of the report by id, and its configs (built once: the grid's plan is read once)."""
        if self.grid is None:
            return RunIndex.from_folders(self.run_paths)
        try:
            plan = gridlib.plan(self.grid, self.profile, workdir=self.root)
        except gridlib.GridError as err:
            raise ReportError(str(err)) from None
        return RunIndex.from_plan(plan, self.runs_dir, frozenset(self.grid["experiments"]),
                                  self.settings.get("knobs") or {})

    @property
    def settings(self) -> Mapping[str, Any]:
        return self.grid["profiles"][self.profile] if self.grid is not None else {}

    def experiment(self, name: str) -> list[Mapping[str, Any]] | None:
        """The groups the grid declares for experiment ``name`` (None: no grid or no such experiment)."""
        return None if self.grid is None else self.grid["experiments"].get(name)

    @property
    def depth_map(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in (self.settings.get("depth_map") or {}).items()}

    def trained_depth(self, paper_depth: int) -> int:
        return self.depth_map.get(int(paper_depth), int(paper_depth))

    @property
    def synthetic_profile(self) -> bool:
        return self.settings.get("data") == "synthetic"

    def depth_note(self, paper_depths) -> str:
        """'rows 20/56/110 trained at depths 11/20/29' when the profile trains other depths, else ''."""
        depths = sorted({int(d) for d in paper_depths})
        if not any(self.trained_depth(d) != d for d in depths):
            return ""
        noun = "depths" if len(depths) > 1 else "depth"
        return (f"rows {'/'.join(map(str, depths))} trained at {noun} "
                f"{'/'.join(str(self.trained_depth(d)) for d in depths)}")

    # -- words ---------------------------------------------------------------------------------
    @property
    def source_words(self) -> str:
        """What the report describes, in LaTeX: 'profile \\texttt{smoke}' or 'run folders \\texttt{manual}'."""
        kind = "profile" if self.from_grid else "run folders"
        return f"{kind} \\texttt{{{tex_escape(self.profile)}}}"

    @property
    def command_options(self) -> str:
        """The options of the ``dla-repro report`` command that rebuilds this report (for file headers)."""
        return f"--profile {self.profile}" if self.from_grid else f"--runs ... --name {self.profile}"

    # -- where ---------------------------------------------------------------------------------
    @property
    def results_dir(self) -> Path:
        return self.root / layout.results_root(self.profile)

    @property
    def runs_dir(self) -> Path:
        return self.results_dir / "runs"

    @property
    def reports_dir(self) -> Path:
        return self.root / layout.reports_root(self.profile)

    def shown(self, path: Path) -> str:
        """A path as the report prints it: relative to the project folder when inside it."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)
