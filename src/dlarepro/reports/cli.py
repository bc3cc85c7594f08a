"""``dla-repro report``: aggregate the runs, write the tables, the figures and the LaTeX report.

``register(subparsers)`` adds the command to the main parser. Every action rewrites only files whose
content changed (atomically), so re-running with nothing new touches nothing. Failures print one
line on stderr (``dla-repro report ACTION: error: ...``) and exit with status 1, without a traceback.
This module imports neither pandas nor matplotlib: the main parser is built for every command.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

from .common import DEFAULT_RUNS_NAME, ReportError

EPILOG = f"""what is reported:
  --profile NAME (default)         the runs the grid declares for a profile, in results/<profile>/runs/
  --runs PATH... [--name NAME]     run folders trained by hand (`dla-repro train ... out_dir=PATH`
                                   writes run.yaml there), or folders holding such run folders;
                                   <profile> below is then NAME (default: {DEFAULT_RUNS_NAME})

example (two runs trained by hand, then their report):
  dla-repro train dataset=cifar100 arch=none depth=20 recipe=smoke data_root=data/demo out_dir=results/mine/none-20
  dla-repro train dataset=cifar100 arch=dla_l depth=20 recipe=smoke data_root=data/demo out_dir=results/mine/dla_l-20
  dla-repro report all --runs results/mine --name mine    # PATHs are relative to the current folder

outputs (relative to --root):
  results/<profile>/runs.csv       one row per finished run
  results/<profile>/summary.csv    one row per config: seeds, mean/std/min/max of best and final top-1,
                                   the paper's value and a Welch t-test against the ResNet baseline
  results/<profile>/comparisons.csv  every table's p column, one line per (row, partner): each row
                                   against the rows the paper compares it with (comparisons.yaml),
                                   Welch p and Holm-corrected p within the table
  results/<profile>/problems.csv   unfinished, corrupt, duplicated and out-of-grid run folders (never
                                   averaged in)
  results/<profile>/figure4.csv    DVC plots data: dataset, method, depth, mean, std
  results/<profile>/claims.csv     (report claims) a verdict on every claim of the paper's prose
  results/<profile>/headline.json  (report claims) DVC metrics: runs finished and expected, claims per
                                   verdict
  reports/<profile>/tables/        one .tex per table module of dlarepro.reports.tables (table1..table6,
                                   coupling, claims, params)
  reports/<profile>/figures/       one .pdf and .png per figure module of dlarepro.reports.figures
                                   (figure2, figure4, cost)
  reports/<profile>/paper.tex      the report; paper.pdf with --compile"""


def _wrap(text: str) -> str:
    """A description wrapped by hand: the parsers keep their epilog's layout (raw), so also this text's."""
    return textwrap.fill(text, width=100)


def _fail(action: str, message: str) -> int:
    print(f"dla-repro report {action}: error: {message}", file=sys.stderr)
    return 1


def _context(args: argparse.Namespace):
    from .context import Context

    if args.runs is None:
        if args.name is not None:
            raise ReportError("--name names a report of --runs folders; a profile's report is named by its profile")
        grid = args.grid if args.grid is not None else Path(args.root) / "params.yaml"
        return Context.load(grid, args.profile, args.root)
    given = [flag for flag, value in (("--profile", args.profile), ("--grid", args.grid)) if value is not None]
    if given:
        raise ReportError(f"--runs reports the given run folders, not a profile of the grid: drop {' and '.join(given)}")
    return Context.of_runs(args.runs, args.name or DEFAULT_RUNS_NAME, args.root)


def _run(args: argparse.Namespace, steps: list[str]) -> int:
    from .steps import run_steps

    try:
        run_steps(_context(args), steps)
    except ReportError as err:
        return _fail(args.report_command, str(err))
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    return _run(args, ["aggregate"])


def cmd_claims(args: argparse.Namespace) -> int:
    return _run(args, ["claims"])


def cmd_tables(args: argparse.Namespace) -> int:
    return _run(args, ["tables"])


def cmd_figures(args: argparse.Namespace) -> int:
    return _run(args, ["figures"])


def cmd_paper(args: argparse.Namespace) -> int:
    return _run(args, ["paper", "compile"] if args.compile else ["paper"])


def cmd_all(args: argparse.Namespace) -> int:
    return _run(args, ["aggregate", "claims", "tables", "figures", "paper"] + (["compile"] if args.compile else []))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", metavar="NAME",
                        help="grid profile to report on (default: the grid's `profile:` key, e.g. smoke)")
    parser.add_argument("--grid", metavar="PATH", help="experiment grid file (default: params.yaml in --root)")
    parser.add_argument("--root", default=".", metavar="DIR",
                        help="project folder holding results/ and reports/ (default: the current folder)")
    parser.add_argument("--runs", nargs="+", metavar="PATH",
                        help="report these run folders trained by hand (each has the run.yaml `dla-repro train` "
                             "writes), or folders holding them, instead of a profile's runs")
    parser.add_argument("--name", metavar="NAME",
                        help=f"with --runs: the name of the report's folders results/NAME/ and reports/NAME/ "
                             f"(default: {DEFAULT_RUNS_NAME})")


def _compile_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compile", action="store_true",
                        help="also run pdflatex into reports/<profile>/paper.pdf; fails with the LaTeX error on any "
                             "error (needs scripts/install-latex.sh)")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``report`` and its actions (aggregate, claims, tables, figures, paper, all) to argparse subparsers."""
    report = subparsers.add_parser(
        "report", help="aggregate finished runs into CSVs, LaTeX tables, figures and a PDF report",
        description=_wrap("Turn a profile's finished runs (results/<profile>/runs/), or run folders trained by hand "
                    "(--runs), into the paper's tables and figures. Runs that are unfinished or corrupt are "
                    "listed, never averaged in; rows without runs show the published value and 'not run'. A run "
                    "stands for a paper row by what it trains (dataset, method, depth, the knobs the table "
                    "varies), as its run.yaml says. Only files whose content changed are rewritten."),
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
    )
    actions = report.add_subparsers(dest="report_command", metavar="ACTION")
    actions.required = True

    agg = actions.add_parser(
        "aggregate", help="runs.csv, summary.csv, comparisons.csv, problems.csv, figure4.csv",
        description=_wrap("Read every run folder of the profile (or of --runs), check its metrics.json against its "
                    "run.yaml, and write results/<profile>/{runs,summary,comparisons,problems}.csv and the "
                    "figures' data files (figure4.csv: DVC plots). The table number is the official code's "
                    "metric (best top-1 over epochs, mean and sample std over seeds); the final-epoch top-1 is "
                    "reported beside it. comparisons.csv tests each table row against the rows the paper compares "
                    "it with (Welch, Holm-corrected within the table). Problems are also printed."),
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
    )
    _common(agg)
    agg.set_defaults(func=cmd_aggregate)

    cla = actions.add_parser(
        "claims", help="claims.csv (a verdict on every claim of the paper) and headline.json (DVC metrics)",
        description=_wrap("Evaluate every quantitative claim of the paper's prose (resources/paper/claims.yaml) "
                    "against the paper's own tables and against the runs the tables use, and write "
                    "results/<profile>/claims.csv (published check, measured contrast with its 95% Welch "
                    "interval, Holm-corrected p within each table, verdict, seeds for 80% power) and "
                    "headline.json (runs and claims per verdict). The rules: python -m dlarepro.claims rules. "
                    "Reads runs.csv: run `report aggregate` first."),
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
    )
    _common(cla)
    cla.set_defaults(func=cmd_claims)

    tab = actions.add_parser(
        "tables", help="reports/<profile>/tables/*.tex (Tables 1-6, batch coupling, claims, parameter check)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description=_wrap("Write the paper's Tables 1-6 (same rows, order and blocks; ours beside the published "
                    "values; best per block in bold), the batch-coupling table, the claims' verdicts and the "
                    "parameter check as LaTeX (booktabs). Reads results/<profile>/summary.csv, comparisons.csv "
                    "and claims.csv: run `report aggregate` and `report claims` first. Counting the ImageNet "
                    "models' parameters and MACs takes some seconds."),
    )
    _common(tab)
    tab.set_defaults(func=cmd_tables)

    fig = actions.add_parser(
        "figures", help="reports/<profile>/figures/*.{pdf,png} (Figures 2 and 4, the cost figure)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description=_wrap("Draw Figure 4 (top-1 versus depth), Figure 2 (stage-3 attention, MRLA-B vs DLA-B) and a "
                    "cost figure (step time and parameters versus depth) with byte-deterministic output. Missing "
                    "data shows as 'not run'. Reads the aggregate files: run `report aggregate` first."),
    )
    _common(fig)
    fig.set_defaults(func=cmd_figures)

    pap = actions.add_parser(
        "paper", help="reports/<profile>/paper.tex (and paper.pdf with --compile)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description=_wrap("Write a LaTeX document that inputs every table and includes every figure by relative path; "
                    "with --compile run pdflatex (-interaction=nonstopmode -halt-on-error) until references "
                    "settle, into a byte-reproducible paper.pdf."),
    )
    _common(pap)
    _compile_flag(pap)
    pap.set_defaults(func=cmd_paper)

    everything = actions.add_parser(
        "all", help="aggregate, claims, tables, figures and paper in order",
        description=_wrap("Run aggregate, claims, tables, figures and paper (and pdflatex with --compile)."),
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
    )
    _common(everything)
    _compile_flag(everything)
    everything.set_defaults(func=cmd_all)
    return report


def main(argv: list[str] | None = None) -> int:
    """``dla-repro report ...`` on its own (tests; before the main parser registers it)."""
    parser = argparse.ArgumentParser(prog="dla-repro")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
