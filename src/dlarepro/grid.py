"""The declared experiment grid (``params.yaml``) expanded into runs.

Every table and figure lists the groups of runs it needs; a group is the product of its lists
(datasets × depths × archs × knob values × the profile's seeds). Knobs equal to a method's
default are dropped, so a run shared by several tables is a single node. A profile sets the
scale: recipe, seeds, real or synthetic data, and (for smoke) a map from the paper's depths to
the depths actually trained.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .archspec import ARCH_KNOBS, DEFAULTS, check_model_args

KNOB_KEYS = ("cell", "sigma", "reduction")
SCHEMA = "grid.schema.yaml"


class GridError(ValueError):
    """The grid file cannot be expanded; the message names the experiment and the bad value."""


def schema_path() -> Path:
    return Path(str(resources.files("dlarepro") / "resources" / SCHEMA))


def validate(grid: Mapping[str, Any]) -> None:
    """JSON-schema validation (the same schema Snakemake's ``validate()`` applies)."""
    import jsonschema

    schema = yaml.safe_load(schema_path().read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(grid), key=lambda e: list(e.path))
    if errors:
        lines = [f"{'/'.join(map(str, e.path)) or '(top level)'}: {e.message}" for e in errors]
        raise GridError("the experiment grid does not match its schema:\n  - " + "\n  - ".join(lines))


def read_yaml(path: str | Path) -> Any:
    return yaml.safe_load(Path(path).read_text())


def load(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file {str(path)!r} does not exist")
    grid = read_yaml(path)
    if not isinstance(grid, dict):
        raise GridError(f"{path}: expected a mapping")
    validate(grid)
    return grid


@dataclass(frozen=True)
class Run:
    """One training run of the grid: what is trained, at which seed, for which experiments."""

    dataset: str
    arch: str
    paper_depth: int
    depth: int
    seed: int
    knobs: tuple[tuple[str, Any], ...] = ()
    capture_attention: bool = False
    experiments: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def run_id(self) -> str:
        knobs = "".join(f"-{k}_{v}" for k, v in self.knobs)
        return f"{self.dataset}-{self.arch}{knobs}-d{self.depth}-s{self.seed}"

    @property
    def config_id(self) -> str:
        """The run id without the seed: the unit a table row averages over."""
        return self.run_id.rsplit("-s", 1)[0]

    @property
    def knob_dict(self) -> dict[str, Any]:
        return dict(self.knobs)


def profile_of(grid: Mapping[str, Any], name: str | None = None) -> tuple[str, dict[str, Any]]:
    name = name or grid["profile"]
    if name not in grid["profiles"]:
        raise GridError(f"unknown profile {name!r}; the grid defines {sorted(grid['profiles'])}")
    return name, grid["profiles"][name]


def _group_runs(experiment: str, group: Mapping[str, Any], profile: Mapping[str, Any]) -> Iterable[Run]:
    depth_map = {int(k): v for k, v in (profile.get("depth_map") or {}).items()}
    knob_lists = [[(k, v) for v in group[k]] for k in KNOB_KEYS if k in group]
    for dataset, paper_depth, arch in itertools.product(group["datasets"], group["depths"], group["archs"]):
        if arch not in ARCH_KNOBS:
            raise GridError(f"experiment {experiment!r}: unknown arch {arch!r}; choose one of {list(ARCH_KNOBS)}")
        defaults = DEFAULTS.get(arch, {})
        depth = depth_map.get(paper_depth, paper_depth)
        for combo in itertools.product(*knob_lists):
            knobs = tuple(sorted((k, v) for k, v in combo if defaults.get(k, object()) != v))
            try:
                check_model_args(arch, depth, dataset, **dict(knobs))
            except ValueError as err:
                raise GridError(f"experiment {experiment!r}: {err}") from None
            for seed in profile["seeds"]:
                yield Run(dataset, arch, paper_depth, depth, seed, knobs,
                          bool(group.get("capture_attention", False)), frozenset([experiment]))


def expand(grid: Mapping[str, Any], profile: str | None = None) -> dict[str, Run]:
    """Every run of the profile, keyed by run id; shared runs merged (capture if any needs it)."""
    _, prof = profile_of(grid, profile)
    runs: dict[str, Run] = {}
    for experiment, groups in grid["experiments"].items():
        for group in groups:
            for run in _group_runs(experiment, group, prof):
                old = runs.get(run.run_id)
                if old is not None:
                    if old.paper_depth != run.paper_depth:
                        raise GridError(f"run {run.run_id} stands for two paper depths "
                                        f"({old.paper_depth}, {run.paper_depth}): fix the profile's depth_map")
                    run = Run(run.dataset, run.arch, run.paper_depth, run.depth, run.seed, run.knobs,
                              old.capture_attention or run.capture_attention, old.experiments | run.experiments)
                runs[run.run_id] = run
    return dict(sorted(runs.items()))


def runs_of(grid: Mapping[str, Any], experiment: str, profile: str | None = None) -> list[Run]:
    if experiment not in grid["experiments"]:
        raise GridError(f"unknown experiment {experiment!r}; the grid declares {sorted(grid['experiments'])}")
    return [r for r in expand(grid, profile).values() if experiment in r.experiments]


def data_root(profile_name: str) -> str:
    """Where a profile's datasets live, relative to the working directory (DVC output)."""
    return f"data/{profile_name}"


DATASET_MARKERS = {"cifar10": "cifar-10-batches-py/batches.meta", "cifar100": "cifar-100-python/meta",
                   "imagenet": "imagenet/train"}


def dataset_marker(profile_name: str, dataset: str) -> str:
    """A file that exists once the profile's copy of ``dataset`` is in place (Snakemake input)."""
    return f"{data_root(profile_name)}/{DATASET_MARKERS[dataset]}"


def results_root(profile_name: str) -> str:
    return f"results/{profile_name}"


def run_dir(profile_name: str, run_id: str) -> str:
    return f"{results_root(profile_name)}/runs/{run_id}"


def run_config(grid: Mapping[str, Any], run_id: str, profile: str | None = None,
               workdir: str | Path = ".") -> dict[str, Any]:
    """The training config (``dlarepro.train``) of one run, absolute paths under ``workdir``."""
    name, prof = profile_of(grid, profile)
    runs = expand(grid, name)
    if run_id not in runs:
        raise GridError(f"run {run_id!r} is not in the {name!r} grid")
    run = runs[run_id]
    workdir = Path(workdir).resolve()
    config = {"dataset": run.dataset, "arch": run.arch, "depth": run.depth, "seed": run.seed,
              "recipe": prof["recipe"], "data_root": str(workdir / data_root(name)),
              "out_dir": str(workdir / run_dir(name, run_id)), **run.knob_dict}
    if run.capture_attention:
        config["capture_attention"] = True
    config.update(prof.get("overrides") or {})
    return config


def summary(grid: Mapping[str, Any], profile: str | None = None) -> str:
    name, _ = profile_of(grid, profile)
    runs = expand(grid, name)
    lines = [f"profile {name}: {len(runs)} runs"]
    for experiment in grid["experiments"]:
        lines.append(f"  {experiment}: {sum(experiment in r.experiments for r in runs.values())} runs")
    return "\n".join(lines)
