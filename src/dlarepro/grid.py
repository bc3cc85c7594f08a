"""The declared experiment grid (``params.yaml``) expanded into runs.

Every table and figure lists the groups of runs it needs; a group is the product of its lists
(datasets × detectors × depths × archs × knob values × the profile's seeds, or the first
``n_seeds`` of them). Knobs equal to a method's default are dropped, so a run shared by several
tables is a single node. A profile sets the scale: recipe, seeds, real or synthetic data, (for
smoke) a map from the paper's CIFAR depths to the depths actually trained, per-family settings
for ImageNet and COCO, and the experiments it skips.

A COCO run (a detector on an ImageNet backbone) depends on the ImageNet run of its backbone,
which is added to the grid when no experiment lists it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .archspec import ARCH_KNOBS, DEFAULTS, check_model_args

KNOB_KEYS = ("cell", "sigma", "reduction")
CIFAR = ("cifar10", "cifar100")
DETECTORS = ("faster_rcnn", "mask_rcnn")
#: recipe used for a family when the profile does not name one
FAMILY_RECIPES = {"imagenet": "imagenet", "coco": "coco"}
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
    detector: str | None = None
    #: the ImageNet run whose weights initialise a detector's backbone
    backbone_seed: int | None = None

    @property
    def run_id(self) -> str:
        knobs = "".join(f"-{k}_{v}" for k, v in self.knobs)
        detector = f"-{self.detector}" if self.detector else ""
        return f"{self.dataset}{detector}-{self.arch}{knobs}-d{self.depth}-s{self.seed}"

    @property
    def family(self) -> str:
        """cifar, imagenet or coco: which recipe and per-family profile settings apply."""
        return "cifar" if self.dataset in CIFAR else self.dataset

    @property
    def backbone(self) -> "Run | None":
        """The ImageNet run a detection run is initialised from (None for classification runs)."""
        if self.detector is None:
            return None
        return Run("imagenet", self.arch, self.paper_depth, self.depth, self.backbone_seed, self.knobs,
                   experiments=self.experiments)

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
    seeds = profile["seeds"][: group.get("n_seeds", len(profile["seeds"]))]
    detectors = group.get("detectors", [None])
    for dataset, detector, paper_depth, arch in itertools.product(group["datasets"], detectors, group["depths"],
                                                                  group["archs"]):
        if (dataset == "coco") != (detector is not None):
            raise GridError(f"experiment {experiment!r}: 'detectors' is required for coco and only for coco "
                            f"(dataset {dataset!r}, detectors {group.get('detectors')})")
        if arch not in ARCH_KNOBS:
            raise GridError(f"experiment {experiment!r}: unknown arch {arch!r}; choose one of {list(ARCH_KNOBS)}")
        defaults = DEFAULTS.get(arch, {})
        # the smoke profile's depth map stands for CIFAR depths; ImageNet has only 50 and 101
        depth = depth_map.get(paper_depth, paper_depth) if dataset in CIFAR else paper_depth
        for combo in itertools.product(*knob_lists):
            knobs = tuple(sorted((k, v) for k, v in combo if defaults.get(k, object()) != v))
            try:  # a detector's backbone is an ImageNet model
                check_model_args(arch, depth, "imagenet" if detector else dataset, **dict(knobs))
            except ValueError as err:
                raise GridError(f"experiment {experiment!r}: {err}") from None
            for seed in seeds:
                yield Run(dataset, arch, paper_depth, depth, seed, knobs,
                          bool(group.get("capture_attention", False)), frozenset([experiment]), detector,
                          profile["seeds"][0] if detector else None)


def skipped_experiments(grid: Mapping[str, Any], profile: Mapping[str, Any]) -> list[str]:
    skipped = list(profile.get("skip_experiments") or [])
    unknown = sorted(set(skipped) - set(grid["experiments"]))
    if unknown:
        raise GridError(f"skip_experiments names unknown experiments {unknown}; the grid declares "
                        f"{sorted(grid['experiments'])}")
    return skipped


def expand(grid: Mapping[str, Any], profile: str | None = None) -> dict[str, Run]:
    """Every run of the profile, keyed by run id; shared runs merged (capture if any needs it)."""
    _, prof = profile_of(grid, profile)
    skipped = skipped_experiments(grid, prof)
    runs: dict[str, Run] = {}

    def add(run: Run) -> None:
        old = runs.get(run.run_id)
        if old is not None:
            if old.paper_depth != run.paper_depth:
                raise GridError(f"run {run.run_id} stands for two paper depths "
                                f"({old.paper_depth}, {run.paper_depth}): fix the profile's depth_map")
            run = replace(run, capture_attention=old.capture_attention or run.capture_attention,
                          experiments=old.experiments | run.experiments)
        runs[run.run_id] = run

    for experiment, groups in grid["experiments"].items():
        if experiment in skipped:
            continue
        for group in groups:
            for run in _group_runs(experiment, group, prof):
                add(run)
                if run.backbone is not None:  # the detector's upstream ImageNet run is a node too
                    add(run.backbone)
    return dict(sorted(runs.items()))


def runs_of(grid: Mapping[str, Any], experiment: str, profile: str | None = None) -> list[Run]:
    if experiment not in grid["experiments"]:
        raise GridError(f"unknown experiment {experiment!r}; the grid declares {sorted(grid['experiments'])}")
    return [r for r in expand(grid, profile).values() if experiment in r.experiments]


def data_root(profile_name: str) -> str:
    """Where a profile's datasets live, relative to the working directory (DVC output)."""
    return f"data/{profile_name}"


#: a file or folder inside a dataset's data root that exists once the dataset is in place
DATASET_MARKERS = {"cifar10": "cifar-10-batches-py/batches.meta", "cifar100": "cifar-100-python/meta",
                   "imagenet": "train", "coco": "coco/annotations/instances_train2017.json"}


def dataset_root(profile_name: str, dataset: str) -> str:
    """The ``data_root`` a run of ``dataset`` reads (ImageNet: the folder holding train/ and val/)."""
    return f"{data_root(profile_name)}/imagenet" if dataset == "imagenet" else data_root(profile_name)


def dataset_marker(profile_name: str, dataset: str) -> str:
    """A file that exists once the profile's copy of ``dataset`` is in place (Snakemake input)."""
    return f"{dataset_root(profile_name, dataset)}/{DATASET_MARKERS[dataset]}"


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
    return config_of(runs[run_id], name, prof, workdir)


def config_of(run: Run, name: str, prof: Mapping[str, Any], workdir: str | Path = ".") -> dict[str, Any]:
    """The training config of ``run`` in profile ``name`` (settings ``prof``)."""
    run_id = run.run_id
    workdir = Path(workdir).resolve()
    family = family_settings(prof, run.family)
    config = {"dataset": run.dataset, "arch": run.arch, "depth": run.depth, "seed": run.seed,
              "recipe": family["recipe"], "data_root": str(workdir / dataset_root(name, run.dataset)),
              "out_dir": str(workdir / run_dir(name, run_id)), **run.knob_dict}
    if run.detector:
        config["detector"] = run.detector
        config["pretrained"] = str(workdir / run_dir(name, run.backbone.run_id))
    if run.capture_attention:
        config["capture_attention"] = True
    config.update(family.get("overrides") or {})
    return config


def check_run_configs(grid: Mapping[str, Any], profile: str | None = None) -> None:
    """Validate the training config of every run of the profile (recipe, overrides, knobs), so a
    bad value stops the workflow before the first job is submitted rather than at its own job."""
    from .config import ConfigError, resolve_any

    name, prof = profile_of(grid, profile)
    problems: dict[str, str] = {}
    for run in expand(grid, name).values():
        config = config_of(run, name, prof)
        try:
            resolve_any(config)
        except ConfigError as err:
            problems.setdefault(str(err), run.run_id)
    if problems:
        raise GridError(f"profile {name!r}: " + "\n".join(f"run {run_id}: {text}" for text, run_id in problems.items()))


def family_settings(profile: Mapping[str, Any], family: str) -> dict[str, Any]:
    """recipe, overrides and synthetic_size of a profile for one family (cifar, imagenet, coco).

    CIFAR settings are the profile's top-level keys; ImageNet and COCO have their own blocks, so
    that e.g. the smoke profile's CIFAR overrides never reach an ImageNet run.
    """
    if family == "cifar":
        return {k: profile.get(k) for k in ("recipe", "overrides", "synthetic_size")}
    block = dict(profile.get(family) or {})
    block.setdefault("recipe", FAMILY_RECIPES[family])
    return block


def datasets_of(grid: Mapping[str, Any], profile: str | None = None) -> list[str]:
    """The datasets the profile's runs need (what its data stage prepares)."""
    return sorted({run.dataset for run in expand(grid, profile).values()})


def summary(grid: Mapping[str, Any], profile: str | None = None) -> str:
    name, prof = profile_of(grid, profile)
    runs = expand(grid, name)
    skipped = skipped_experiments(grid, prof)
    lines = [f"profile {name}: {len(runs)} runs"]
    for experiment in grid["experiments"]:
        count = sum(experiment in r.experiments for r in runs.values())
        lines.append(f"  {experiment}: " + ("skipped by this profile" if experiment in skipped else f"{count} runs"))
    return "\n".join(lines)
