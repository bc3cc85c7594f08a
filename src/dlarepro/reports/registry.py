"""The tables and figures of the report, discovered from their packages.

Every module of ``dlarepro.reports.tables`` declares one ``TABLE = TableSpec(...)``, every module
of ``dlarepro.reports.figures`` one ``FIGURE = FigureSpec(...)``: name, number, the section of
``paper.tex`` it belongs in, its inputs (grid experiment, aggregate files) and its builder. The
output file lists, the sections of ``paper.tex``, the Snakemake rules and the aggregate files
read them from here; adding a table is one module (plus its paper CSV).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

TABLE_PACKAGE = "dlarepro.reports.tables"
FIGURE_PACKAGE = "dlarepro.reports.figures"
#: what ``aggregate`` always writes; figures add their data files (e.g. figure4.csv)
AGGREGATE_FILES = ("runs.csv", "summary.csv", "comparisons.csv", "problems.csv")
#: what ``claims`` writes: a verdict on every claim of the paper, and the DVC metrics (runs and verdicts)
CLAIMS_FILES = ("claims.csv", "headline.json")
FIGURE_FORMATS = ("pdf", "png")


class RegistryError(Exception):
    """A table or figure module is malformed (the message names the module and the problem)."""


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    appendix: bool = False


#: the sections of paper.tex in order; each table and figure names one by its key
SECTIONS = (
    Section("cifar", "CIFAR-10 and CIFAR-100"),
    Section("imagenet", "ImageNet-1K"),
    Section("coco", "COCO object detection"),
    Section("ablations", "Ablations"),
    Section("attention", "Static versus dynamic attention"),
    Section("cost", "Cost"),
    Section("coupling", "Beyond the paper: the official code's batch coupling"),
    Section("claims", "The paper's claims"),
    Section("params", "Parameter check", appendix=True),
)


@dataclass(frozen=True)
class TableSpec:
    """One table: ``tables/<name>.tex``, labelled ``tab:<name>``."""

    name: str
    #: its number in the report: the paper's for the paper's tables, the next free one for others
    number: int
    section: str
    #: ``Builder -> latex.Table`` (see :mod:`dlarepro.reports.tablekit`)
    build: Callable[[Any], Any]
    #: the grid experiment whose runs fill its rows (preferred when several configs fit a row)
    experiment: str | None = None
    #: the aggregate files it reads (``results/<profile>/...``): its p column reads comparisons.csv
    inputs: tuple[str, ...] = ("summary.csv", "comparisons.csv")
    #: its paper CSV (``resources/paper/table<number>.csv``) lists one CIFAR model per row with a
    #: published top-1 mean and std: summary.csv joins those rows, headline.json reports them
    published_top1: bool = False
    #: the block a paper row sits in (the paper draws rules between blocks)
    group: Callable[[Any], str] | None = None
    #: ``Context -> [comparisons.Pair]``: what its p column tests (``report aggregate`` writes the
    #: tests into comparisons.csv; see :func:`dlarepro.reports.comparisons.paper_pairs`)
    pairs: Callable[[Any], list] | None = None
    #: too wide for the text width: typeset on a page turned sideways (with its section's heading
    #: when it is the section's only content), its text half as large again as squeezed
    landscape: bool = False

    @property
    def files(self) -> tuple[str, ...]:
        return (f"{self.name}.tex",)


@dataclass(frozen=True)
class FigureSpec:
    """One figure: ``figures/<name>.pdf`` and ``.png``, labelled ``fig:<name>``."""

    name: str
    number: int
    section: str
    caption: str
    #: ``(Context, Frames, synthetic words) -> matplotlib Figure`` (see :mod:`dlarepro.reports.figurekit`)
    build: Callable[..., Any]
    experiment: str | None = None
    inputs: tuple[str, ...] = ("summary.csv",)
    #: an aggregate file of the points drawn (DVC plots data), written by ``report aggregate``
    data_file: str | None = None
    #: ``(Context, summary) -> rows`` (dicts of ``data_schema``'s columns): what ``data_file`` holds
    data: Callable[..., Any] | None = None
    data_schema: tuple = ()
    #: ``(Context, Frames) -> str``: numbers the caption adds after ``caption`` (e.g. Figure 2's)
    caption_numbers: Callable[..., str] | None = None

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(f"{self.name}.{ext}" for ext in FIGURE_FORMATS)


def _discover(package: str, attribute: str, kind: type) -> dict[str, Any]:
    pkg = importlib.import_module(package)
    sections = [s.key for s in SECTIONS]
    found: dict[str, Any] = {}
    numbers: dict[int, str] = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        spec = getattr(module, attribute, None)
        if not isinstance(spec, kind):
            raise RegistryError(f"{module.__name__} declares no {attribute} = {kind.__name__}(...); every module "
                                f"of {package} is one {attribute.lower()}")
        if spec.section not in sections:
            raise RegistryError(f"{module.__name__}: section {spec.section!r} is not one of {sections}")
        for seen, what in ((found, spec.name), (numbers, spec.number)):
            if what in seen:
                raise RegistryError(f"{module.__name__}: {attribute.lower()} {what!r} is declared twice")
        found[spec.name] = spec
        numbers[spec.number] = spec.name
    order = sorted(found.values(), key=lambda s: (sections.index(s.section), s.number))
    return {s.name: s for s in order}


@functools.cache
def tables() -> dict[str, TableSpec]:
    """Every table, in the order of paper.tex (by section, then number)."""
    return _discover(TABLE_PACKAGE, "TABLE", TableSpec)


@functools.cache
def figures() -> dict[str, FigureSpec]:
    """Every figure, in the order of paper.tex (by section, then number)."""
    return _discover(FIGURE_PACKAGE, "FIGURE", FigureSpec)


def refresh() -> None:
    """Forget what was discovered (a module added while the process runs)."""
    tables.cache_clear()
    figures.cache_clear()


def table_files() -> list[str]:
    return [f for spec in tables().values() for f in spec.files]


def figure_files() -> list[str]:
    return [f for spec in figures().values() for f in spec.files]


def aggregate_files() -> list[str]:
    """What ``report aggregate`` writes into ``results/<profile>/``."""
    return list(AGGREGATE_FILES) + [spec.data_file for spec in figures().values() if spec.data_file]


def claims_files() -> list[str]:
    """What ``report claims`` writes into ``results/<profile>/``."""
    return list(CLAIMS_FILES)


def table_inputs() -> list[str]:
    return sorted({f for spec in tables().values() for f in spec.inputs})


def figure_inputs() -> list[str]:
    return sorted({f for spec in figures().values() for f in spec.inputs})
