"""The runs a report describes, indexed by their ids, and their configs found by attributes.

In a profile the runs are the grid's plan (``grid.plan``: identity and resolved config of every
declared run, each in ``results/<profile>/runs/<run id>``); for run folders trained by hand they
are whatever ``run.yaml`` each folder holds. A config groups the seeds of one model.

A paper row or a figure point names a model by attributes (dataset, method, paper depth, the
knobs its table varies); :meth:`RunIndex.find` returns the config that trains it. A config may
carry further knobs (a profile may train every DLA run with ``dsu_state: first_image``, which
shows in its ids) and still stand for the row; the grid experiment the row belongs to and the
fewest extra knobs decide between candidates. A config of another experiment stands for the row
only if it trains what the profile's ``knobs`` give the row's method (what produced the published
numbers): a ``per_image`` run of the batch-coupling experiment never fills a published row of a
profile that trains ``first_image``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .. import paper
from ..identity import RUN_FILE, RunIdentity, RunRecord, read_run_file
from ..methods import METHODS, family_of
from .common import ReportError

METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class RunEntry:
    """One run: who it is, where its folder is, whether it records attention scores (Figure 2)."""

    identity: RunIdentity
    folder: Path
    capture_attention: bool = False
    #: the resolved config the grid plans for it (None for hand-made folders): a finished folder
    #: trained with another one is stale (dlarepro.freshness)
    planned: Mapping[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ConfigEntry:
    """The seeds of one model: the unit a table row or a figure point averages over."""

    config_id: str
    dataset: str
    arch: str
    depth: int
    paper_depth: int
    detector: str | None
    knobs: tuple[tuple[str, Any], ...]
    experiments: frozenset[str]
    run_ids: tuple[str, ...]

    @property
    def model_dataset(self) -> str:
        """The dataset the network is built for (a detector's backbone is an ImageNet model)."""
        return "imagenet" if self.detector else self.dataset

    def knob(self, name: str) -> Any:
        """The value of knob ``name``: as set, else the method's default for the family (None if the
        method does not take it)."""
        given = dict(self.knobs)
        if name in given:
            return given[name]
        spec = METHODS.get(self.arch)
        if spec is None or name not in spec.knob_names:
            return None
        return spec.knob(name).default_for(family_of(self.model_dataset))


def _knob_value(arch: str, name: str, value: Any) -> Any:
    """A knob value read from a paper CSV (a string) as the knob's type."""
    spec = METHODS.get(arch)
    default = spec.knob(name).default if spec and name in spec.knob_names else None
    if isinstance(value, str) and isinstance(default, (int, float)) and not isinstance(default, bool):
        return type(default)(value)
    return value


class RunIndex:
    """Runs by id, configs by id, and what could not be indexed (hand-made folders only)."""

    def __init__(self, runs: Mapping[str, RunEntry], problems: Iterable[dict[str, str]] = (),
                 declared_experiments: frozenset[str] = frozenset(), profile_knobs: Mapping[str, Any] | None = None):
        self.runs = dict(sorted(runs.items()))
        self.problems = list(problems)
        #: experiments the grid declares (also those the profile skips); none for hand-made folders
        self.declared_experiments = declared_experiments
        #: the profile's ``knobs`` (what its published rows train); none for hand-made folders
        self.profile_knobs = dict(profile_knobs or {})

    @classmethod
    def from_plan(cls, plan: Mapping[str, RunRecord], runs_dir: Path, declared_experiments: frozenset[str],
                  profile_knobs: Mapping[str, Any] | None = None) -> "RunIndex":
        runs = {run_id: RunEntry(record.identity, runs_dir / run_id, bool(record.config.get("capture_attention")),
                                 record.config)
                for run_id, record in plan.items()}
        return cls(runs, (), declared_experiments, profile_knobs)

    @classmethod
    def from_folders(cls, paths: Iterable[Path]) -> "RunIndex":
        """The run folders among ``paths`` (each a run folder or a folder of run folders)."""
        runs: dict[str, RunEntry] = {}
        problems = []
        for folder in run_folders(paths):
            try:
                record = read_run_file(folder)
            except ValueError as err:
                problems.append({"run_id": folder.name, "status": "corrupt", "detail": str(err), "path": str(folder)})
                continue
            run_id = record.identity.run_id
            if run_id in runs:
                problems.append({"run_id": run_id, "status": "duplicate", "path": str(folder),
                                 "detail": f"{runs[run_id].folder} holds the same run (that one is used)"})
                continue
            runs[run_id] = RunEntry(record.identity, folder, bool(record.config.get("capture_attention")))
        return cls(runs, problems)

    @functools.cached_property
    def configs(self) -> dict[str, ConfigEntry]:
        grouped: dict[str, list[RunIdentity]] = {}
        for entry in self.runs.values():
            grouped.setdefault(entry.identity.config_id, []).append(entry.identity)
        out = {}
        for cid, members in sorted(grouped.items()):
            first = members[0]
            out[cid] = ConfigEntry(cid, first.dataset, first.arch, first.depth, first.paper_depth, first.detector,
                                   first.knobs, frozenset(e for m in members for e in m.experiments),
                                   tuple(m.run_id for m in members))
        return out

    @functools.cached_property
    def defining_knobs(self) -> tuple[str, ...]:
        return paper.defining_knobs()

    def _wanted(self, arch: str, model_dataset: str, knobs: Mapping[str, Any]) -> dict[str, Any]:
        """The defining knobs a model of ``arch`` must have: as given, else the method's defaults."""
        spec = METHODS.get(arch)
        if spec is None:
            return {}
        family = family_of(model_dataset)
        return {k: _knob_value(arch, k, knobs[k]) if knobs.get(k) not in (None, "") else spec.knob(k).default_for(family)
                for k in self.defining_knobs if k in spec.knob_names}

    def _as_profile_trains(self, config: ConfigEntry) -> bool:
        """Whether ``config`` has the profile's knobs that its method takes (e.g. ``dsu_state``)."""
        spec = METHODS.get(config.arch)
        taken = {k: v for k, v in self.profile_knobs.items() if spec is not None and k in spec.knob_names}
        return all(config.knob(k) == v for k, v in taken.items())

    def _rank(self, config: ConfigEntry, wanted: Mapping[str, Any], experiments: Iterable[str]) -> tuple:
        extra = [k for k, _ in config.knobs if k not in wanted]
        return (not (config.experiments & set(experiments)), len(extra), config.config_id)

    def find(self, *, dataset: str, arch: str, paper_depth: int, detector: str | None = None,
             knobs: Mapping[str, Any] | None = None, experiments: Iterable[str] = ()) -> ConfigEntry | None:
        """The config that trains this model (None if no run does): the defining knobs equal (as
        given, else default); one outside ``experiments`` only if it has the profile's knobs; among
        several, one of ``experiments`` first, then the fewest other knobs."""
        model_dataset = "imagenet" if detector else dataset
        wanted = self._wanted(arch, model_dataset, knobs or {})
        experiments = tuple(experiments)
        candidates = [c for c in self.configs.values()
                      if (c.dataset, c.arch, c.paper_depth, c.detector) == (dataset, arch, int(paper_depth), detector)
                      and all(c.knob(k) == v for k, v in wanted.items())
                      and (c.experiments & set(experiments) or self._as_profile_trains(c))]
        return min(candidates, key=lambda c: self._rank(c, wanted, experiments), default=None)

    def plain(self, experiment: str | None = None) -> list[ConfigEntry]:
        """The configs of each method's default model (defining knobs at their defaults), one per
        (dataset, detector, method, paper depth): of ``experiment`` when the grid declares it, else all."""
        member = experiment is not None and experiment in self.declared_experiments
        keys = sorted({(c.dataset, c.detector or "", c.arch, c.paper_depth) for c in self.configs.values()
                       if not member or experiment in c.experiments})
        found = [self.find(dataset=d, detector=det or None, arch=a, paper_depth=p,
                           experiments=(experiment,) if experiment else ()) for d, det, a, p in keys]
        return [c for c in found if c is not None and (not member or experiment in c.experiments)]

    def baseline(self, config: ConfigEntry) -> ConfigEntry | None:
        """The plain ResNet a classification config is compared with (same dataset and paper depth)."""
        if config.arch == "none" or config.detector:
            return None
        return self.find(dataset=config.dataset, arch="none", paper_depth=config.paper_depth,
                         experiments=config.experiments)


def is_run_folder(path: Path) -> bool:
    return (path / RUN_FILE).is_file() or (path / METRICS_FILE).is_file()


def run_folders(paths: Iterable[Path]) -> list[Path]:
    """Each path that is a run folder, and the run folders directly inside each path that is not;
    a ReportError names a path that is neither."""
    found: dict[Path, Path] = {}
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            raise ReportError(f"--runs: {str(path)!r} is not a folder")
        if is_run_folder(path):
            inside = [path]
        else:
            inside = sorted(p for p in path.iterdir() if p.is_dir() and is_run_folder(p))
            if not inside:
                raise ReportError(f"--runs: {str(path)!r} is not a run folder and holds none (a run folder has "
                                  f"the {RUN_FILE} that `dla-repro train` writes)")
        for folder in inside:
            found.setdefault(folder.resolve(), folder)
    return list(found.values())
