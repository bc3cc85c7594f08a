"""Everything about a layer-interaction method that does not need torch: one spec per method.

The workflow validates whole experiment grids when Snakemake builds its DAG and before every
submission, and the reports name and colour every method; importing torch there would cost
seconds per job. A spec holds the reader's name, the colour every figure uses, the knobs with
their allowed values and defaults, and what the method can record (attention scores). The
network class of each method is registered under the same name in ``models/interactions.py``
(a test checks both registries agree).

Adding a method: one class in ``models/interactions.py`` with ``@register("name")`` and one
``register_method(MethodSpec(...))`` here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

DATASETS = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
IMAGENET_DEPTHS = (50, 101)
CELLS = ("dsu", "dia", "lstm", "rnn")
SIGMAS = ("sigmoid", "identity", "tanh", "relu")


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _probability(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1


@dataclass(frozen=True)
class Knob:
    """A setting of a method: allowed ``choices`` (or a ``check`` for numbers) and its default.

    ``by_family`` replaces the default for a model family (the official ImageNet DSU reduction is
    16). ``in_run_id``: a value other than the default names a different model in run ids (cell,
    sigma); drop-path is a training setting of the recipe, not a different model.
    """

    name: str
    default: Any
    choices: tuple[Any, ...] = ()
    check: Callable[[Any], bool] | None = None
    expected: str = ""
    by_family: Mapping[str, Any] = field(default_factory=dict)
    in_run_id: bool = True

    def default_for(self, family: str) -> Any:
        return self.by_family.get(family, self.default)

    def problem(self, method: str, value: Any) -> str | None:
        if self.choices and value not in self.choices:
            return f"{method}: {self.name}={value!r} is not one of {list(self.choices)}"
        if self.check is not None and not self.check(value):
            return f"{method}: {self.name} must be {self.expected}, got {value!r}"
        return None


DROP_PATH = Knob("drop_path", 0.0, check=_probability, expected="a number in [0, 1)", in_run_id=False)
REDUCTION = Knob("reduction", 4, check=_positive_int, expected="a positive integer", by_family={"imagenet": 16})
SIGMA = Knob("sigma", "sigmoid", SIGMAS)
#: which DSU state refreshes an image's features: its own (the paper's equations) or, as in the
#: official code, image 0's for every image of the batch (its outputs then depend on the batch)
DSU_STATE = Knob("dsu_state", "per_image", ("per_image", "first_image"))


def _sigma_needs_dsu(method: str, knobs: Mapping[str, Any]) -> str | None:
    if knobs.get("sigma", "sigmoid") != "sigmoid" and knobs.get("cell") != "dsu":
        return f"{method}: sigma={knobs['sigma']!r} only applies to the DSU cell, not cell={knobs.get('cell')!r}"
    return None


@dataclass(frozen=True)
class MethodSpec:
    """One layer-interaction method: names, colour, knobs, abilities."""

    name: str                      # registry name, e.g. "dla_l"
    display: str                   # the paper's name, e.g. "DLA-L"
    colour: str                    # one colour in every figure
    knobs: tuple[Knob, ...] = ()
    #: the method keeps attention scores over the layers of a stage (Figure 2)
    captures_attention: bool = False
    #: static or dynamic layer attention (Figure 2's panel titles); "" for the others
    attention: str = ""
    #: cross-knob rules: a message when the combination is impossible
    rules: tuple[Callable[[str, Mapping[str, Any]], str | None], ...] = ()

    @property
    def knob_names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.knobs)

    def knob(self, name: str) -> Knob:
        return next(k for k in self.knobs if k.name == name)

    def defaults(self, family: str = "cifar") -> dict[str, Any]:
        return {k.name: k.default_for(family) for k in self.knobs}

    def resolve_knobs(self, dataset: str, knobs: Mapping[str, Any]) -> dict[str, Any]:
        """Validated knobs with every default of the dataset's family filled in."""
        for key, value in knobs.items():
            if key not in self.knob_names:
                accepted = ", ".join(self.knob_names) or "none"
                raise ValueError(f"{self.name} does not take the knob {key!r} (accepted: {accepted})")
            why = self.knob(key).problem(self.name, value)
            if why:
                raise ValueError(why)
        full = {**self.defaults(family_of(dataset)), **knobs}
        for rule in self.rules:
            why = rule(self.name, full)
            if why:
                raise ValueError(why)
        return full

    def id_knobs(self, dataset: str, knobs: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
        """The knobs that make this model differ from the method's default one (for run ids)."""
        defaults = self.defaults(family_of(dataset))
        return tuple(sorted((k, v) for k, v in knobs.items() if v is not None and k in self.knob_names
                            and self.knob(k).in_run_id and defaults.get(k) != v))

    def title(self) -> str:
        return f"{self.display} ({self.attention})" if self.attention else self.display


#: name -> spec, in the paper's order (tables and legends follow it)
METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    METHODS[spec.name] = spec
    return spec


_DYNAMIC = (DROP_PATH, Knob("cell", "dsu", CELLS), SIGMA, REDUCTION, DSU_STATE)
register_method(MethodSpec("none", "ResNet", "#4d4d4d"))
register_method(MethodSpec("se", "SE", "#17becf"))
register_method(MethodSpec("eca", "ECA", "#bcbd22"))
register_method(MethodSpec("dia", "DIANet", "#1f77b4", (Knob("cell", "dia", ("dia", "lstm", "dsu")), SIGMA, REDUCTION),
                           rules=(_sigma_needs_dsu,)))
register_method(MethodSpec("mrla_b", "MRLA-B", "#ff7f0e", (DROP_PATH,), captures_attention=True, attention="static"))
register_method(MethodSpec("dla_b", "DLA-B", "#d62728", _DYNAMIC, captures_attention=True, attention="dynamic",
                           rules=(_sigma_needs_dsu,)))
register_method(MethodSpec("mrla_l", "MRLA-L", "#9467bd", (DROP_PATH,), attention="static"))
register_method(MethodSpec("dla_l", "DLA-L", "#2ca02c", _DYNAMIC, attention="dynamic", rules=(_sigma_needs_dsu,)))


def method(name: str) -> MethodSpec:
    """The spec of ``name``; a ValueError naming the registered methods otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown arch {name!r}; choose one of {list(METHODS)}") from None


def archs() -> tuple[str, ...]:
    return tuple(METHODS)


def knob_names() -> tuple[str, ...]:
    """Every knob any method takes (run configs accept each as a key)."""
    return tuple(dict.fromkeys(k.name for spec in METHODS.values() for k in spec.knobs))


def id_knob_names() -> tuple[str, ...]:
    """The knobs that name a different model (run ids), as opposed to training settings."""
    return tuple(dict.fromkeys(k.name for spec in METHODS.values() for k in spec.knobs if k.in_run_id))


def family_of(dataset: str) -> str:
    return "imagenet" if dataset in ("imagenet", "coco") else "cifar"


def check_depth(depth: Any, dataset: str) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise ValueError(f"depth must be an integer, got {depth!r}")
    if dataset == "imagenet":
        if depth not in IMAGENET_DEPTHS:
            raise ValueError(f"ImageNet depth must be one of {list(IMAGENET_DEPTHS)}, got {depth}")
    elif depth < 11 or (depth - 2) % 9:
        lower = max(11, depth - (depth - 2) % 9)
        raise ValueError(
            f"CIFAR bottleneck depth must be 9n+2 with n >= 1 (11, 20, 29, ..., 56, ..., 110), got {depth}; "
            f"nearest valid: {lower} or {lower + 9}"
        )


def check_model_args(arch: str, depth: int, dataset: str, **knobs: Any) -> dict[str, Any]:
    """Validate a model request; return its knobs with every default filled in.

    Raises ``ValueError`` naming the bad value and what is allowed.
    """
    spec = method(arch)
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {list(DATASETS)}")
    check_depth(depth, dataset)
    return spec.resolve_knobs(dataset, knobs)


def display_name(arch: str, depth: int, **knobs: Any) -> str:
    """A reader's name for a model, e.g. ``DLA-L-110 (cell=lstm)`` (knobs as given)."""
    extras = ", ".join(f"{k}={v}" for k, v in sorted(knobs.items()) if k != "drop_path")
    return f"{method(arch).display}-{depth}" + (f" ({extras})" if extras else "")
