"""What a run *is*, carried with it: ids, the model it trains, the experiments that use it.

The grid expands once into runs; each run folder receives ``run.yaml`` (this identity plus the
resolved config) before its job is submitted, and ``metrics.json`` names the run again. Reports
index runs by these ids and never re-expand the grid or parse an id. A run trained by hand gets
the same file from its own config (no experiments; the trained depth stands for the paper's).

A run id reads ``<dataset>[-<detector>]-<arch>[-<knob>_<value>...]-d<depth>-s<seed>``; the config id
is the same without the seed: the unit a table row averages over. Only knobs that differ from the
method's default (for the dataset's family) appear, so a model shared by several tables is one id.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .methods import knob_names, method

RUN_FILE = "run.yaml"


def config_id_of(dataset: str, arch: str, depth: int, knobs: tuple[tuple[str, Any], ...] = (),
                 detector: str | None = None) -> str:
    knob_text = "".join(f"-{k}_{v}" for k, v in knobs)
    detector_text = f"-{detector}" if detector else ""
    return f"{dataset}{detector_text}-{arch}{knob_text}-d{depth}"


def run_id_of(config_id: str, seed: int) -> str:
    return f"{config_id}-s{seed}"


@dataclass(frozen=True)
class RunIdentity:
    """The identity of one run. ``knobs``: the non-default knobs, sorted (they name the model)."""

    run_id: str
    config_id: str
    dataset: str
    arch: str
    depth: int
    paper_depth: int
    seed: int
    detector: str | None = None
    knobs: tuple[tuple[str, Any], ...] = ()
    experiments: tuple[str, ...] = ()
    profile: str | None = None
    #: the run whose final weights initialise this one (a detector's ImageNet backbone)
    backbone: str | None = None

    @property
    def family(self) -> str:
        """cifar, imagenet or coco: which recipe and per-family profile settings apply."""
        return "cifar" if self.dataset in ("cifar10", "cifar100") else self.dataset

    @property
    def knob_dict(self) -> dict[str, Any]:
        return dict(self.knobs)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["knobs"] = dict(self.knobs)
        out["experiments"] = list(self.experiments)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunIdentity":
        """The identity written by :meth:`to_dict`; a ValueError naming what is missing or wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a run identity is a mapping, not {type(data).__name__}")
        required = ("run_id", "config_id", "dataset", "arch", "depth", "paper_depth", "seed")
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"run identity lacks {', '.join(missing)}")
        knobs = data.get("knobs") or {}
        experiments = data.get("experiments") or []
        if not isinstance(knobs, Mapping) or not isinstance(experiments, (list, tuple)):
            raise ValueError("run identity: knobs must be a mapping and experiments a list")
        return cls(str(data["run_id"]), str(data["config_id"]), str(data["dataset"]), str(data["arch"]),
                   int(data["depth"]), int(data["paper_depth"]), int(data["seed"]), data.get("detector") or None,
                   tuple(sorted(knobs.items())), tuple(str(e) for e in experiments), data.get("profile"),
                   data.get("backbone"))


def identity_of_config(config: Mapping[str, Any], *, paper_depth: int | None = None,
                       experiments: tuple[str, ...] = (), profile: str | None = None) -> RunIdentity:
    """The identity a resolved run config implies (a run trained by hand: its own paper depth)."""
    dataset, arch, depth = config["dataset"], config["arch"], int(config["depth"])
    detector = config.get("detector")
    present = {k: config.get(k) for k in knob_names() if config.get(k) is not None}
    knobs = method(arch).id_knobs("imagenet" if detector else dataset, present)
    cid = config_id_of(dataset, arch, depth, knobs, detector)
    return RunIdentity(run_id_of(cid, int(config["seed"])), cid, dataset, arch, depth,
                       depth if paper_depth is None else int(paper_depth), int(config["seed"]), detector, knobs,
                       tuple(sorted(experiments)), profile)


@dataclass
class RunRecord:
    """``run.yaml``: the identity and the resolved config the job trains."""

    identity: RunIdentity
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.identity.to_dict(), "config": dict(self.config)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunRecord":
        config = data.get("config")
        if not isinstance(config, Mapping):
            raise ValueError("run record lacks its resolved config")
        return cls(RunIdentity.from_dict(data), dict(config))


def write_run_file(folder: str | Path, record: RunRecord) -> Path:
    """Write ``folder/run.yaml`` atomically (only when its content changes)."""
    import yaml

    from .atomic import write_text

    path = Path(folder) / RUN_FILE
    text = yaml.safe_dump(record.to_dict(), sort_keys=True)
    try:
        if path.read_text() == text:
            return path
    except OSError:
        pass
    write_text(path, text)
    return path


def read_run_file(folder: str | Path) -> RunRecord:
    """``folder/run.yaml``; ValueError (naming the file) when missing or unreadable."""
    import yaml

    path = Path(folder) / RUN_FILE
    try:
        data = yaml.safe_load(path.read_text())
        return RunRecord.from_dict(data)
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist") from None
    except (OSError, yaml.YAMLError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a run record ({type(err).__name__}: {err})") from None
