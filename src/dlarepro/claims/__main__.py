"""``python -m dlarepro.claims``: evaluate the paper's claims, list the sentences its own tables
contradict, check the quotes against the paper's text, print the decision rules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

EPILOG = """examples:
  python -m dlarepro.claims failing                      # the published checks that fail, with the arithmetic
  python -m dlarepro.claims evaluate --out claims.csv    # every claim (no runs: every verdict 'not run')
  python -m dlarepro.claims evaluate --runs my_runs.csv --out claims.csv   # every run of the table
  dla-repro report claims --profile paper                # a profile's claims.csv, from the runs its tables use
  python -m dlarepro.claims quotes --paper paper.txt     # every quote verbatim in the paper's text?
  python -m dlarepro.claims rules                        # how each column is decided
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dlarepro.claims", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="A verdict on every quantitative claim of the DLA paper (resources/paper/claims.yaml).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ev = sub.add_parser("evaluate", help="evaluate every claim; write claims.csv and print the counts",
                        description="Evaluate every claim against the published tables and, with --runs, "
                                    "against the seeds of finished runs.")
    ev.add_argument("--runs", type=Path, help="a runs.csv-shaped table; every run in it stands for its model's "
                    "row (a profile's report: `dla-repro report claims`, which takes the runs the tables use)")
    ev.add_argument("--runs-dir", type=Path, help="the run folders (for Figure 2's attention files); "
                    "default: runs/ next to --runs")
    ev.add_argument("--top1", choices=["best_top1", "final_top1"], default="best_top1",
                    help="which top-1 the claims use (default: best_top1, the official code's number)")
    ev.add_argument("--ignore-knob", action="append", default=[], metavar="KNOB",
                    help="a knob (e.g. dsu_state) whose runs still stand for the paper's rows; repeatable")
    ev.add_argument("--out", type=Path, help="write claims.csv here (atomically)")
    sub.add_parser("failing", help="the claims whose published check fails, with the arithmetic")
    q = sub.add_parser("quotes", help="check every quote is verbatim in the paper's text")
    q.add_argument("--paper", type=Path, required=True, help="the paper as plain text")
    sub.add_parser("rules", help="print the decision rules")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import spec, verdicts

    try:
        if args.command == "rules":
            from .rules import DECISION_RULES

            print(DECISION_RULES)
            return 0
        if args.command == "quotes":
            return _quotes(args.paper)
        if args.command == "failing":
            failures = verdicts.failing_published()
            for f in failures:
                print(f.text(), end="\n\n")
            print(f"{len(failures)} of {len(spec.load())} claims disagree with the paper's own tables")
            return 0
        return _evaluate(args)
    except (spec.ClaimsError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _quotes(paper: Path) -> int:
    from . import spec
    from .quotes import quote_problems

    text = paper.read_text(encoding="utf-8")
    claims = spec.load()
    entries = [(c.id, c.quote) for c in claims]
    entries += [(f"not_checkable[{i}]", e["quote"]) for i, e in enumerate(claims.not_checkable)]
    problems = quote_problems(entries, text)
    for p in problems:
        print(p)
    print(f"{len(entries) - len(problems)} of {len(entries)} quotes found verbatim in {paper}")
    return 1 if problems else 0


def _evaluate(args) -> int:
    import pandas as pd

    from . import verdicts
    from .inputs import measurements_from_runs

    measurements = None
    if args.runs is not None:
        runs = pd.read_csv(args.runs, keep_default_na=False, na_values=[""],
                           dtype={"knobs": str, "detector": str, "attention_scores": str, "run_id": str})
        runs_dir = args.runs_dir or args.runs.parent / "runs"
        measurements = measurements_from_runs(runs, top1=args.top1, runs_dir=runs_dir,
                                              ignore_knobs=tuple(args.ignore_knob))
    df = verdicts.evaluate(measurements=measurements)
    if args.out is not None:
        verdicts.write_csv(df, args.out)
        print(f"wrote {args.out}")
    counts = verdicts.counts(df)
    print(f"{counts['claims']} claims: " + ", ".join(f"{counts[v]} {v}" for v in verdicts.VERDICTS)
          + f"; {counts['published_fails']} disagree with the paper's own tables")
    if counts["synthetic"]:
        print(f"note: {counts['synthetic']} verdicts rest on runs trained on SYNTHETIC data: a pipeline check, "
              f"not a reproduction")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
