"""The declared experiment grid (``params.yaml``), validated and expanded into runs once.

Every table and figure lists the groups of runs it needs; a group is the product of its lists
(datasets × detectors × depths × archs × knob values × the profile's seeds, or the first
``n_seeds`` of them). Knobs equal to a method's default are dropped, so a run shared by several
tables is a single node. A profile sets the scale: recipe, seeds, real or synthetic data, (for
smoke) a map from the paper's CIFAR depths to the depths actually trained, per-family settings
for ImageNet and COCO, the experiments it skips, and ``knobs`` given to every run whose method
takes them unless the group lists that knob itself (the paper profile trains what produced the
published numbers: ``dsu_state: first_image``, the official code's refresh). A group may ask for
the final model to be evaluated again at other test batch sizes (``eval_batch_sizes``); a run
shared by several groups gets every size any of them asks for.

A COCO run (a detector on an ImageNet backbone) depends on the ImageNet run of its backbone,
which is added to the grid when no experiment lists it.

:func:`plan` turns the expansion into what every run folder receives before its job is submitted
(``run.yaml``: identity and resolved config); readers of the grid (the Snakefile, ``dla-repro``
commands) call :func:`load`, which validates the whole file first.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import layout, yamlfile
from .identity import RunIdentity, RunRecord, config_id_of, run_id_of
from .methods import METHODS, check_model_args, id_knob_names, knob_names

CIFAR = ("cifar10", "cifar100")
DETECTORS = ("faster_rcnn", "mask_rcnn")
#: recipe used for a family when the profile does not name one
FAMILY_RECIPES = {"imagenet": "imagenet", "coco": "coco"}
#: run settings an override may not change: they say which run it is and where it lives
IDENTITY_KEYS = ("dataset", "arch", "depth", "seed", "detector", "out_dir", "data_root", "pretrained",
                 "capture_attention", "eval_batch_sizes")


class GridError(ValueError):
    """The grid file cannot be used; the message names the file, the place and the bad value."""


def schema() -> dict[str, Any]:
    """The grid's JSON schema, completed with the registered executors and method knobs."""
    from .executors import EXECUTORS, options_schema
    from .runconfig import packaged

    s = yamlfile.parse(packaged("schemas").joinpath("grid.schema.yaml").read_text(), "grid.schema.yaml")
    props = s["properties"]
    props["executor"] = {"enum": list(EXECUTORS), "description": props["executor"]["description"]}
    props["executor_options"] = options_schema()
    for family in props["executor_options_by_family"]["properties"]:
        props["executor_options_by_family"]["properties"][family] = options_schema()
    group = props["experiments"]["additionalProperties"]["items"]["properties"]
    for name in knob_names():
        group.setdefault(name, {"type": "array", "minItems": 1, "description": f"values of the {name} knob"})
    props["profiles"]["additionalProperties"]["properties"]["knobs"]["propertyNames"] = {"enum": list(knob_names())}
    return s


def _profile_knob_problems(name: str, knobs: Mapping[str, Any]) -> list[str]:
    """A profile knob must be a valid value for at least one method that takes it (each run then
    checks its own model)."""
    lines = []
    for knob, value in knobs.items():
        takers = [spec for spec in METHODS.values() if knob in spec.knob_names]
        problems = [spec.knob(knob).problem(spec.name, value) for spec in takers]
        if takers and all(problems):
            lines.append(f"profiles/{name}/knobs/{knob}: {problems[0]}")
    return lines


def _non_finite(value: Any, path: str = "") -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path or '(top level)'}: {value!r} is not a finite number"]
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _non_finite(v, f"{path}/{k}" if path else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{path}/{i}")]
    return []


def normalise_executor_options(config: dict[str, Any]) -> None:
    """Convert executor option values that Snakemake's ``--config`` hands over as strings (it parses
    nested values as plain YAML strings) to the option's type, in place."""
    from .executors import EXECUTORS, ExecutorError

    options = {name: option for cls in EXECUTORS.values() for name, option in cls.options.items()}
    blocks = [config.get("executor_options")] + list((config.get("executor_options_by_family") or {}).values())
    for block in blocks:
        if not isinstance(block, dict):
            continue
        for key, value in list(block.items()):
            if key in options and isinstance(value, str) and options[key].kind in (int, float):
                try:
                    block[key] = options[key].convert(key, value)
                except ExecutorError as err:
                    raise GridError(str(err)) from None


def validate(grid: Any, source: str = "the experiment grid") -> None:
    """Schema, finite numbers, overrides that keep each run's identity; one GridError lists all."""
    import jsonschema

    if not isinstance(grid, Mapping):
        raise GridError(f"{source}: expected a mapping of keys to values, got {type(grid).__name__}")
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(grid), key=lambda e: list(e.path))
    lines = [f"{'/'.join(map(str, e.path)) or '(top level)'}: {e.message}" for e in errors]
    lines += _non_finite(grid)
    if not errors:  # option values reach #SBATCH lines: the executors' own checks (no newline, ...)
        from .executors import option_problems

        lines += option_problems(grid.get("executor_options") or {}, "executor_options")
        for family, block in (grid.get("executor_options_by_family") or {}).items():
            lines += option_problems(block or {}, f"executor_options_by_family/{family}")
    for name, prof in (grid.get("profiles") or {}).items() if not errors else ():
        lines += _profile_knob_problems(name, prof.get("knobs") or {})
        for where, block in (("", prof), ("imagenet/", prof.get("imagenet") or {}), ("coco/", prof.get("coco") or {})):
            bad = sorted(set(block.get("overrides") or {}) & set(IDENTITY_KEYS + id_knob_names()))
            if bad:
                lines.append(f"profiles/{name}/{where}overrides: {bad} say which run it is or where it lives; "
                             f"declare them in the experiments and the profile, not as overrides")
    if not errors and grid.get("profile") not in grid.get("profiles", {}):
        lines.append(f"profile: {grid.get('profile')!r} is not one of the profiles {sorted(grid['profiles'])}")
    if lines:
        raise GridError(f"{source} is not a valid experiment grid:\n  - " + "\n  - ".join(lines))


def load(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read and validate the grid file (a GridError names the file and every problem)."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file {str(path)!r} does not exist")
    try:
        grid = yamlfile.read(path)
    except yamlfile.YamlError as err:
        raise GridError(str(err)) from None
    validate(grid, str(path))
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
    #: extra test batch sizes the final model is evaluated at (an evaluation, not a different run)
    eval_batch_sizes: frozenset[int] = field(default=frozenset(), compare=False)

    @property
    def config_id(self) -> str:
        """The run id without the seed: the unit a table row averages over."""
        return config_id_of(self.dataset, self.arch, self.depth, self.knobs, self.detector)

    @property
    def run_id(self) -> str:
        return run_id_of(self.config_id, self.seed)

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
    def knob_dict(self) -> dict[str, Any]:
        return dict(self.knobs)

    def identity(self, profile: str | None = None) -> RunIdentity:
        return RunIdentity(self.run_id, self.config_id, self.dataset, self.arch, self.depth, self.paper_depth,
                           self.seed, self.detector, self.knobs, tuple(sorted(self.experiments)), profile,
                           self.backbone.run_id if self.backbone else None)


def profile_of(grid: Mapping[str, Any], name: str | None = None) -> tuple[str, dict[str, Any]]:
    name = name or grid["profile"]
    if name not in grid["profiles"]:
        raise GridError(f"unknown profile {name!r}; the grid defines {sorted(grid['profiles'])}")
    return name, grid["profiles"][name]


def profile_knobs(profile: Mapping[str, Any], arch: str, listed: Iterable[str] = ()) -> dict[str, Any]:
    """The profile's ``knobs`` that a run of ``arch`` receives: those its method takes, except the
    knobs its group lists itself (``listed``). Readers that map a paper row onto a run id add these
    to the row's own knobs, as the expansion does."""
    listed = set(listed)
    return {k: v for k, v in (profile.get("knobs") or {}).items()
            if k not in listed and k in METHODS[arch].knob_names}


def _group_runs(experiment: str, group: Mapping[str, Any], profile: Mapping[str, Any]) -> Iterable[Run]:
    depth_map = {int(k): v for k, v in (profile.get("depth_map") or {}).items()}
    knob_lists = [[(k, v) for v in group[k]] for k in knob_names() if k in group]
    seeds = profile["seeds"][: group.get("n_seeds", len(profile["seeds"]))]
    detectors = group.get("detectors", [None])
    eval_sizes = frozenset(group.get("eval_batch_sizes") or ())
    for dataset, detector, paper_depth, arch in itertools.product(group["datasets"], detectors, group["depths"],
                                                                  group["archs"]):
        if (dataset == "coco") != (detector is not None):
            raise GridError(f"experiment {experiment!r}: 'detectors' is required for coco and only for coco "
                            f"(dataset {dataset!r}, detectors {group.get('detectors')})")
        if arch not in METHODS:
            raise GridError(f"experiment {experiment!r}: unknown arch {arch!r}; choose one of {list(METHODS)}")
        if eval_sizes and detector is not None:
            raise GridError(f"experiment {experiment!r}: eval_batch_sizes applies to classification runs, "
                            f"not to coco detectors")
        implied = profile_knobs(profile, arch, listed=tuple(group))
        # the smoke profile's depth map stands for CIFAR depths; ImageNet has only 50 and 101
        depth = depth_map.get(paper_depth, paper_depth) if dataset in CIFAR else paper_depth
        model_dataset = "imagenet" if detector else dataset  # a detector's backbone is an ImageNet model
        for combo in itertools.product(*knob_lists):
            given = {**implied, **dict(combo)}
            try:
                check_model_args(arch, depth, model_dataset, **given)
            except ValueError as err:
                raise GridError(f"experiment {experiment!r}: {err}") from None
            knobs = METHODS[arch].id_knobs(model_dataset, given)
            for seed in seeds:
                yield Run(dataset, arch, paper_depth, depth, seed, knobs,
                          bool(group.get("capture_attention", False)), frozenset([experiment]), detector,
                          profile["seeds"][0] if detector else None, eval_sizes)


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
                          experiments=old.experiments | run.experiments,
                          eval_batch_sizes=old.eval_batch_sizes | run.eval_batch_sizes)
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


def config_of(run: Run, name: str, prof: Mapping[str, Any], workdir: str | Path = ".") -> dict[str, Any]:
    """The (unresolved) training config of ``run`` in profile ``name`` (settings ``prof``)."""
    workdir = Path(workdir).resolve()
    family = family_settings(prof, run.family)
    config = {"dataset": run.dataset, "arch": run.arch, "depth": run.depth, "seed": run.seed,
              "recipe": family["recipe"], "data_root": str(workdir / layout.dataset_root(name, run.dataset)),
              "out_dir": str(workdir / layout.run_dir(name, run.run_id)), **run.knob_dict}
    if run.detector:
        config["detector"] = run.detector
        config["pretrained"] = str(workdir / layout.run_dir(name, run.backbone.run_id))
    if run.capture_attention:
        config["capture_attention"] = True
    if run.eval_batch_sizes:
        config["eval_batch_sizes"] = sorted(run.eval_batch_sizes)
    config.update(copy.deepcopy(family.get("overrides") or {}))
    return config


def plan(grid: Mapping[str, Any], profile: str | None = None, workdir: str | Path = ".") -> dict[str, RunRecord]:
    """Every run of the profile with its identity and resolved config (every default filled in).

    A bad value anywhere (recipe, overrides, knobs) stops here, before any job is submitted: one
    GridError names each distinct problem and a run it affects.
    """
    from . import kinds
    from .runconfig import ConfigError

    name, prof = profile_of(grid, profile)
    records: dict[str, RunRecord] = {}
    problems: dict[str, str] = {}
    for run_id, run in expand(grid, name).items():
        try:
            config = kinds.resolve(config_of(run, name, prof, workdir))
        except ConfigError as err:
            problems.setdefault(str(err), run_id)
            continue
        records[run_id] = RunRecord(run.identity(name), config)
    if problems:
        raise GridError(f"profile {name!r}: " + "\n".join(f"run {rid}: {text}" for text, rid in problems.items()))
    return records


def run_record(grid: Mapping[str, Any], run_id: str, profile: str | None = None,
               workdir: str | Path = ".") -> RunRecord:
    """One run of the grid by id (a person's entry point: the workflow passes records along)."""
    name, prof = profile_of(grid, profile)
    runs = expand(grid, name)
    if run_id not in runs:
        raise GridError(f"run {run_id!r} is not in the {name!r} grid (see `dla-repro grid list --profile {name}`)")
    from . import kinds
    from .runconfig import ConfigError

    try:
        config = kinds.resolve(config_of(runs[run_id], name, prof, workdir))
    except ConfigError as err:
        raise GridError(f"run {run_id}: {err}") from None
    return RunRecord(runs[run_id].identity(name), config)


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
