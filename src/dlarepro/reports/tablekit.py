"""What the table builders share, and the writer of ``reports/<profile>/tables/*.tex``.

Each table is one module of :mod:`dlarepro.reports.tables` (see :mod:`dlarepro.reports.registry`);
its builder receives a :class:`Builder`: the context, the aggregate frames (summary, comparisons,
and the claims once ``report claims`` has run), our model counts, the paper rows mapped onto
configs, and the wording every caption shares. Every table keeps the paper's rows, order and
blocks; a row without finished runs shows the published value and *not run*; a method we do not
build shows *n/b*; nothing is left empty. A p column prints, per row, the Holm-corrected Welch
p-value against each row the paper compares it with (comparisons.csv), named, with its stars.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd

from .. import claims
from . import registry
from .aggregate import Frames, read_outputs
from .comparisons import of_table
from .common import SYNTHETIC_NOTE, write_if_changed
from .context import Context
from .index import ConfigEntry
from .latex import (NA, NOT_RUN_TEX, Table, best_mask, cell_frame, fmt, is_number, mean_std, numeric_frame, p_text,
                    tex_escape, tex_text)
from .registry import TableSpec
from .rows import table_rows


class ModelCounts:
    """Exact parameter and MAC counts from ``dlarepro.modelinfo`` (MACs are counted there only),
    cached per process: building ImageNet models takes seconds.

    Tests substitute a subclass with canned ImageNet numbers; the CIFAR counts are cheap."""

    @functools.lru_cache(maxsize=None)
    def params(self, arch: str, depth: int, dataset: str, knobs: tuple = ()) -> int:
        from ..modelinfo import model_info

        return model_info(arch, depth, dataset, macs=False, **dict(knobs)).params

    @functools.lru_cache(maxsize=None)
    def imagenet(self, arch: str, depth: int) -> tuple[int, int]:
        """(parameters, MACs at 224x224): the model is built on the meta device (shapes only, no
        weight initialisation), counted as ``modelinfo.model_info`` counts (tests check equality)."""
        from ..modelinfo import meta_counts

        return meta_counts(arch, depth, "imagenet")

    @functools.lru_cache(maxsize=None)
    def check(self) -> pd.DataFrame:
        from ..modelinfo import parameter_check

        return parameter_check()


DEFAULT_COUNTS = ModelCounts()


def _number(value: Any) -> float:
    return float(value) if is_number(value) else math.nan


@dataclass
class Stats:
    """Our seed statistics of one config (``n == 0``: not run)."""

    n: int = 0
    best_mean: float = math.nan
    best_std: float = math.nan
    final_mean: float = math.nan
    best_top5_mean: float = math.nan   # top-5 at the best top-1's epoch (Table 2)
    params: float = math.nan
    n_synthetic: int = 0
    #: non-default speed switches of any seed ("amp=bf16,compile=True"), marked SWITCH_MARK
    switches: str = ""
    #: seeds trained on data that is not the official release, marked NOT_OFFICIAL_MARK
    n_not_official: int = 0

    @classmethod
    def of(cls, summary: pd.DataFrame, config_id: str) -> "Stats":
        hit = summary[summary.config_id == config_id] if config_id else summary.iloc[:0]
        if hit.empty or int(hit.iloc[0].n_seeds) == 0:
            return cls()
        s = hit.iloc[0]
        return cls(int(s.n_seeds), _number(s.best_top1_mean), _number(s.best_top1_std), _number(s.final_top1_mean),
                   _number(s.best_top5_mean), _number(s.params), int(s.n_synthetic), str(s.switches),
                   int(s.n_not_official))


#: marks a result trained with non-default speed switches / on data other than the official release
SWITCH_MARK, NOT_OFFICIAL_MARK = r"$^{\dagger}$", r"$^{\ddagger}$"


def marks(stats: "Stats") -> str:
    """The marks a result cell carries (see ``run_notes``)."""
    return (SWITCH_MARK if stats.switches else "") + (NOT_OFFICIAL_MARK if stats.n_not_official else "")


def run_notes(ran: list["Stats"]) -> str:
    """The caption sentences that explain ``marks``: which switches, and why modified data is not compared."""
    notes = []
    switches = sorted({w for s in ran for w in s.switches.split(",") if w})
    if switches:
        named = ", ".join(r"\texttt{" + tex_escape(w) + "}" for w in switches)
        notes.append(f"{SWITCH_MARK} trained with non-default speed switches ({named}): the same model computed "
                     "another way, equal within float error except under 16-bit autocast (the paper's runs: fp32).")
    if any(s.n_not_official for s in ran):
        notes.append(NOT_OFFICIAL_MARK + " trained on data whose checksums differ from the official release: "
                     "not a reproduction of the published number.")
    return " ".join(notes)


#: a p cell of a row that no partner is declared for: the reference the other rows are compared with
REFERENCE_TEX = r"\textit{ref.}"
#: what every caption with a p column says about it
P_WORDS = (tex_text(claims.STAR_RULE) + r" \textit{ref.}: a row the others are compared with. Every comparison "
           r"is in comparisons.csv.")


class Builder:
    """Shared state of the table builders: the frames (summary, comparisons, claims), the counts, the
    caption words."""

    def __init__(self, ctx: Context, frames: Frames, counts: ModelCounts):
        self.ctx, self.frames, self.counts = ctx, frames, counts
        self.summary = frames.summary

    def rows(self, spec: TableSpec) -> pd.DataFrame:
        """The paper rows of a ``published_top1`` table, each with the config that trains it."""
        return table_rows(self.ctx, spec)

    def find(self, spec: TableSpec, **attributes: Any) -> ConfigEntry | None:
        """The config of a model of table ``spec`` (its experiment preferred); see ``RunIndex.find``."""
        return self.ctx.index.find(**attributes, experiments=(spec.experiment,) if spec.experiment else ())

    def stats(self, config_id: str) -> Stats:
        return Stats.of(self.summary, config_id)

    def p_cells(self, spec: TableSpec, named: bool = True) -> dict[int, str]:
        """Row position -> the text of its p cell: each partner's Holm-corrected p with its stars,
        named ("0.012$^{*}$ vs DSU"), one line each; rows without partners are ``ref.``, rows without
        any p-value (fewer than two seeds on a side) ``--``."""
        comparisons = self.frames.comparisons
        found = of_table(comparisons, spec.name) if comparisons is not None else {}
        out = {}
        for position, lines in found.items():
            if all(not is_number(line.p_holm) for line in lines):
                out[position] = NA  # no p-value to name: a side has fewer than two seeds
                continue
            texts = [p_text(line.p_holm) + (f"$^{{{line.stars}}}$" if line.stars else "")
                     + (f" vs {tex_escape(line.partner_short)}" if named else "") for line in lines]
            out[position] = texts[0] if len(texts) == 1 else (  # one line per partner
                r"\begin{tabular}[c]{@{}r@{}}" + r"\\".join(texts) + r"\end{tabular}")
        return out

    def p_cell(self, cells: Mapping[int, str], position: int) -> str:
        return cells.get(position, REFERENCE_TEX)

    def dsu_words(self, config_ids) -> str:
        """What the DLA runs of a table train: ``dsu_state=first_image`` (the official code's batch
        coupling, what produced the published numbers) or the paper's per-image equations."""
        configs = [self.ctx.index.configs[c] for c in config_ids if c in self.ctx.index.configs]
        states = sorted({str(c.knob("dsu_state")) for c in configs if c.knob("dsu_state") is not None})
        if not states:
            return ""
        if states == ["first_image"]:
            return (r"The DLA runs use \texttt{dsu\_state=first\_image}: every image of a batch is refreshed "
                    r"with the DSU state of its first image, what the official code does and what produced the "
                    r"published numbers.")
        if states == ["per_image"]:
            return (r"The DLA runs use \texttt{dsu\_state=per\_image} (the paper's equations); the published "
                    r"numbers come from the official code, which refreshes every image of a batch with the DSU "
                    r"state of its first image (\texttt{first\_image}).")
        return ("The DLA runs of this table mix " + " and ".join(f"\\texttt{{dsu\\_state={tex_escape(s)}}}"
                                                                 for s in states) + ".")

    def params_m(self, r, stats: Stats) -> str:
        """Our parameters (million) of the trained model: from the runs, else counted."""
        if stats.n:
            return fmt(stats.params / 1e6)
        config = self.ctx.index.configs.get(r.config_id)
        depth = config.depth if config else self.ctx.trained_depth(r.paper_depth)
        return fmt(self.counts.params(r.arch, depth, r.dataset, tuple(r.knobs)) / 1e6)

    @staticmethod
    def top1(stats: Stats, modal_n: int) -> str:
        if not stats.n:
            return NOT_RUN_TEX
        text = mean_std(stats.best_mean, stats.best_std) + marks(stats)
        if stats.n != modal_n:
            text += f" {{\\scriptsize(n={stats.n})}}"
        return text

    @staticmethod
    def final(stats: Stats) -> str:
        return fmt(stats.final_mean) if stats.n else NOT_RUN_TEX

    def caption(self, title: str, stats: list[Stats], paper_depths, extra: str = "") -> str:
        ran = [s for s in stats if s.n]
        parts = [title]
        synthetic = any(s.n_synthetic for s in ran) or self.ctx.synthetic_profile
        if synthetic:
            depth = self.ctx.depth_note(paper_depths)
            parts.append(r"\textbf{" + SYNTHETIC_NOTE.capitalize() + "}" + (f" ({depth})" if depth else "") + ".")
        source = self.ctx.source_words
        if ran:
            parts.append(f"Ours ({source}): Top-1 is the best test top-1 over epochs, the official code's metric "
                         f"(the paper never says which epoch it reports; the maximum on the test set is biased "
                         f"upwards), mean $\\pm$ sample std over {seed_words(ran)}; Final: final-epoch top-1, mean.")
        else:
            parts.append(f"No finished runs in {source} yet: every row shows the published value and "
                         "\\textit{not run}.")
        if extra:
            parts.append(extra)
        notes = run_notes(ran)
        if notes:
            parts.append(notes)
        parts.append("Paper: as published. Bold: best per column within a block.")
        return " ".join(parts)


def modal(ns: list[int]) -> int:
    ns = [n for n in ns if n]
    return max(set(ns), key=lambda n: (ns.count(n), n)) if ns else 0


def seed_words(ran: list[Stats]) -> str:
    n = modal([s.n for s in ran])
    others = sorted({s.n for s in ran} - {n})
    text = f"{n} seed{'s' if n != 1 else ''}"
    if others:
        text += f" (``(n={others[0]})'' marks a row with another number of finished seeds)"
    return text


#: the columns an accuracy table may show: ours (parameters, best and final top-1, p) and the paper's
OURS_COLUMNS = ("#P(M)", "Top-1", "Final", "p")


def accuracy_table(b: Builder, spec: TableSpec, columns: list[str], title: str, *, label_header: str,
                   block_of: Callable[[Any], str] | None = None) -> Table:
    """A ``published_top1`` table with one model per row (the paper's Tables 4-6): ``columns`` from
    ``OURS_COLUMNS`` and ``Paper #P(M)``, ``Paper Top-1``; ``block_of`` groups rows (rules between).
    Its p column tests each row against the rows the paper compares it with (``spec.pairs``)."""
    rows = b.rows(spec)
    stats = [b.stats(c) for c in rows.config_id]
    n = modal([s.n for s in stats])
    p_cells = b.p_cells(spec)
    cols = [("Ours", c) if c in OURS_COLUMNS else ("Paper", c.replace("Paper ", "")) for c in columns]
    cols = [(a, "$p$" if c == "p" else tex_escape(c)) for a, c in cols]
    records, numbers = [], []
    for position, (r, s) in enumerate(zip(rows.itertuples(index=False), stats)):
        cells: dict = {}
        nums: dict = {}
        for col, name in zip(cols, columns):
            cell, number = _accuracy_cell(b, name, r, s, n, b.p_cell(p_cells, position))
            cells[col] = cell
            if number is not None:
                nums[col] = number
        key = (tex_escape(block_of(r)), tex_escape(r.label)) if block_of else (tex_escape(r.label),)
        records.append((key, cells))
        numbers.append(((), nums))
    cells = cell_frame(records, cols, label_header)
    values = numeric_frame(numbers, cells)
    blocks = pd.Series(cells.index.get_level_values(0)) if block_of else None
    mask = best_mask(values, blocks, [c for c in cols if c[1] in ("Top-1", "Final")])
    extra = " ".join(w for w in (b.dsu_words(rows.config_id), P_WORDS if "p" in columns else "") if w)
    caption = b.caption(title, stats, rows.paper_depth, extra=extra)
    return Table(spec.name, cells, mask, caption, ("ll" if block_of else "l") + "r" * len(cols))


def _accuracy_cell(b: Builder, name: str, r, s: Stats, modal_n: int, p_cell: str) -> tuple[str, float | None]:
    """(text, the number bold compares or None) of one cell of an accuracy table."""
    cells: Mapping[str, Callable[[], tuple[str, float | None]]] = {
        "#P(M)": lambda: (b.params_m(r, s), None),
        "Top-1": lambda: (b.top1(s, modal_n), s.best_mean),
        "Final": lambda: (b.final(s), s.final_mean),
        "p": lambda: (p_cell, None),
        "Paper #P(M)": lambda: (fmt(r.published_params_m), None),
        "Paper Top-1": lambda: (mean_std(r.published_mean, r.published_std), r.published_mean),
    }
    return cells[name]()


def build_tables(ctx: Context, frames: Frames, counts: ModelCounts | None = None) -> dict[str, Table]:
    b = Builder(ctx, frames, counts or DEFAULT_COUNTS)
    return {name: spec.build(b) for name, spec in registry.tables().items()}


def write_tables(ctx: Context, counts: ModelCounts | None = None, echo: Callable[[str], None] = print,
                 frames: Frames | None = None) -> list[Path]:
    """Write ``reports/<profile>/tables/*.tex`` (only files whose content changed); the written paths.
    ``frames``: the aggregate in memory (``report all``); read from ``results/<profile>/`` otherwise."""
    frames = frames if frames is not None else read_outputs(ctx)
    out = ctx.reports_dir / "tables"
    written = []
    built = build_tables(ctx, frames, counts)
    for name, table in built.items():
        if write_if_changed(out / f"{name}.tex", table.latex(ctx.command_options)):
            written.append(out / f"{name}.tex")
    echo(f"tables: {len(written)} of {len(built)} written to {out} (the rest unchanged)")
    return written
