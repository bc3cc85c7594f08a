"""The ``dla-repro`` command line (also ``python -m dlarepro``). Entry points stay thin: the logic
lives in the package modules they call."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from .methods import DATASETS, METHODS, id_knob_names


class CliError(Exception):
    """A user error: printed as one line on stderr, exit status 2, no traceback."""


def _knob_options(parser: argparse.ArgumentParser) -> None:
    """One option per model knob (cell, sigma, reduction, ...), from the method specs."""
    for name in id_knob_names():
        knobs = [spec.knob(name) for spec in METHODS.values() if name in spec.knob_names]
        choices = list(dict.fromkeys(c for k in knobs for c in k.choices)) or None
        takers = ", ".join(f"{spec.name} (default {spec.knob(name).default})" for spec in METHODS.values()
                           if name in spec.knob_names)
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, choices=choices,
                            type=None if choices else type(knobs[0].default), help=f"taken by {takers}")


def _knobs(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in id_knob_names() if getattr(args, name, None) is not None}


def cmd_model_info(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from .modelinfo import model_info, parameter_check

    if args.table:
        table = parameter_check()
        if args.json:
            print(table.to_json(orient="records", indent=1))
        else:
            shown = table[["table", "dataset", "model", "params", "ours_m", "paper_m", "status", "note"]]
            print(tabulate(shown, headers=["table", "dataset", "model", "params", "ours (M)", "paper #P (M)",
                                            "status", "note"], showindex=False, floatfmt="g", intfmt=","))
            counts = table["status"].value_counts()
            print(f"\n{len(table)} paper rows: {counts.get('ok', 0)} match, {counts.get('known', 0)} known "
                  f"differences (explained), {counts.get('MISMATCH', 0)} mismatches")
        return 1 if (table["status"] == "MISMATCH").any() else 0

    missing = [f"--{n}" for n in ("arch", "depth", "dataset") if getattr(args, n) is None]
    if missing:
        raise CliError(f"model-info needs {', '.join(missing)} (or --table)")
    try:
        info = model_info(args.arch, args.depth, args.dataset, **_knobs(args))
    except ValueError as err:
        raise CliError(str(err)) from None
    if args.json:
        print(json.dumps({"arch": info.arch, "depth": info.depth, "dataset": info.dataset, "knobs": info.knobs,
                          "params": info.params, "macs": info.macs}))
    else:
        print(f"{info.name} on {info.dataset}: {info.params:,} parameters ({info.params / 1e6:.2f} M), "
              f"{info.macs:,} MACs per image ({info.macs / 1e9:.3f} G)")
    return 0


EXIT_INTERRUPTED = 3  # a stop signal arrived and a checkpoint was written: run again to resume


def cmd_train(args: argparse.Namespace) -> int:
    """``train`` and ``detect`` (one per run kind): validate, then train (or print the config / recipes)."""
    import yaml

    from . import kinds
    from .runconfig import ConfigError, load_run_config

    kind = kinds.by_command(args.command)
    if args.list_recipes:
        print("\n".join(kind.config.recipe_names()))
        return 0
    try:
        config = load_run_config(args.config, args.overrides, kind.resolve)
    except ConfigError as err:
        raise CliError(str(err)) from None
    if args.print_config:
        print(yaml.safe_dump(config, sort_keys=True), end="")
        return 0
    from .data.common import DatasetError
    from .detection.config import PretrainedWeightsError
    from .hostmemory import keep_freed_memory
    from .runbase import Interrupted
    from .runlock import RunLockError

    keep_freed_memory()  # this process trains: keep every step's maps instead of faulting them in again
    try:
        metrics = kind.train(config, progress=False if args.no_progress else None)
    except (DatasetError, PretrainedWeightsError, RunLockError) as err:
        raise CliError(str(err)) from None
    except Interrupted as err:
        print(f"dla-repro {args.command}: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(metrics, sort_keys=True))
    return 0


def _grid(args: argparse.Namespace):
    from . import grid

    try:
        g = grid.load(args.grid)
        grid.profile_of(g, args.profile)
        return g
    except grid.GridError as err:
        raise CliError(str(err)) from None


def cmd_grid(args: argparse.Namespace) -> int:
    import yaml

    from . import grid
    from .data.common import DatasetError
    from .prepare import DataNotAvailable, prepare_data

    g = _grid(args)
    try:
        if args.action == "list":
            for run_id, run in grid.expand(g, args.profile).items():
                print(run_id if not args.long else f"{run_id}\t{','.join(sorted(run.experiments))}")
        elif args.action == "summary":
            print(grid.summary(g, args.profile))
        elif args.action == "config":
            print(yaml.safe_dump(grid.run_record(g, args.run_id, args.profile).config, sort_keys=True), end="")
        elif args.action == "prepare-data":
            print(prepare_data(g, args.profile, datasets=args.datasets or None))
        elif args.action == "status":
            from . import status

            statuses = status.grid_status(grid.plan(g, args.profile), poll_seconds=args.poll_seconds)
            print(status.as_json(statuses) if args.json else status.render(statuses, list(g["experiments"])))
    except (grid.GridError, DataNotAvailable, DatasetError) as err:  # e.g. no internet for a CIFAR download
        raise CliError(str(err)) from None
    return 0


def _json_argument(text: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as err:
        raise CliError(f"{what} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise CliError(f"{what} must be a JSON object")
    return value


def cmd_submit(args: argparse.Namespace) -> int:
    from . import grid
    from .identity import RunRecord
    from .submit import WORKFLOW_EXECUTOR, SubmitError, options_for_family, submit_record

    if (args.run_id is None) == (args.record is None):
        raise CliError("give either a RUN_ID of the grid or --record (what the workflow passes), not both")
    try:
        if args.record is not None:
            record = RunRecord.from_dict(_json_argument(args.record, "--record"))
        else:
            record = grid.run_record(_grid(args), args.run_id, args.profile)
    except (ValueError, grid.GridError) as err:
        raise CliError(str(err)) from None
    workflow = _json_argument(os.environ.get(WORKFLOW_EXECUTOR, "{}"), f"${WORKFLOW_EXECUTOR}")
    options = (_json_argument(args.options, "--options") if args.options
               else options_for_family(workflow, record.identity.family) if workflow else {})
    try:
        return submit_record(record, executor=args.executor or workflow.get("executor", "local"), options=options,
                             poll_seconds=args.poll_seconds or float(workflow.get("poll_seconds", 10.0)),
                             done=Path(args.done) if args.done else None)
    except SubmitError as err:
        raise CliError(str(err)) from None


def _grid_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grid", default="params.yaml", help="the experiment grid (default: params.yaml)")
    parser.add_argument("--profile", help="profile of the grid (default: the grid's 'profile' key)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dla-repro",
        description="Reproduce the tables and figures of 'Strengthening Layer Interaction via Dynamic Layer "
                    "Attention' (DLA) and its baselines.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    info = sub.add_parser(
        "model-info", help="parameters and MACs of a model, or the check of every paper model (--table)",
        description="Print the exact parameter count and the multiply-accumulates for one input "
                    "(torch.utils.flop_counter: convolutions and matrix products) of one model, or with "
                    "--table every model of the paper's Tables 1, 2, 4 and 6 next to its printed #P.",
    )
    info.add_argument("--arch", choices=list(METHODS), help="layer-interaction method (registry name)")
    info.add_argument("--depth", type=int, help="CIFAR: 9n+2 (20, 56, 110, ...); ImageNet: 50 or 101")
    info.add_argument("--dataset", choices=list(DATASETS), help="decides the family and the number of classes")
    _knob_options(info)
    info.add_argument("--table", action="store_true", help="check every paper model against the paper's #P; "
                                                          "exit status 1 on an unexplained mismatch")
    info.add_argument("--json", action="store_true", help="machine-readable output (one JSON object, or "
                                                         "a list of rows with --table)")
    info.set_defaults(func=cmd_model_info)

    from .kinds import KINDS

    for kind in sorted(KINDS.values(), key=lambda k: k.command, reverse=True):
        training = sub.add_parser(
            kind.command, help=kind.description, formatter_class=argparse.RawDescriptionHelpFormatter,
            description=f"{kind.description[0].upper()}{kind.description[1:]}: a YAML config plus key=value "
                        f"overrides, validated as a whole (every problem named) before any work.",
            epilog=_train_epilog(kind),
        )
        _training_options(training)
        training.set_defaults(func=cmd_train)

    grid = sub.add_parser("grid", help="inspect the experiment grid, prepare a profile's data",
                          description="The declared experiment grid (params.yaml) expanded into runs.")
    grid_actions = grid.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in [("list", "every run id of the profile"), ("summary", "number of runs per experiment"),
                       ("config", "the training config of one run"),
                       ("prepare-data", "generate (synthetic) or download (real) the profile's data"),
                       ("status", "every run as finished / running (epoch k of E, ETA) / pending / failed (last "
                                  "error and log) / stale / not started; counts per table; GPU-hours spent and "
                                  "an estimate of what remains")]:
        action = grid_actions.add_parser(name, help=text, description=text)
        _grid_options(action)
        if name == "config":
            action.add_argument("run_id")
        if name == "list":
            action.add_argument("--long", action="store_true", help="also show the experiments of each run")
        if name == "prepare-data":
            action.add_argument("--datasets", nargs="+", metavar="DATASET",
                                help="only these datasets (default: every dataset the profile's runs use)")
        if name == "status":
            action.add_argument("--json", action="store_true", help="one JSON list of runs instead of the text")
            action.add_argument("--poll-seconds", type=float, default=10.0,
                                help="reuse the running workflow's SLURM answer if it is younger than this")
        action.set_defaults(func=cmd_grid)

    submit = sub.add_parser(
        "submit", help="submit one run of the grid through submitit and wait for it (a Snakemake job)",
        description="Validate the run and its data, submit it through submitit (or re-attach to its job if "
                    "one is still pending or running), wait, and exit 0 once metrics.json exists. A finished run "
                    "is never trained again; a folder trained with another config or on other data is moved to "
                    "results/<profile>/superseded/ and the run trained again. A job whose state SLURM cannot "
                    "tell (accounting down) is waited for, never submitted twice. On failure the error and the "
                    "log paths are printed and the exit status is 1.",
    )
    from .executors import EXECUTORS

    submit.add_argument("run_id", nargs="?", help="a run id of the grid (see: dla-repro grid list)")
    submit.add_argument("--record", metavar="JSON", help="the planned run (identity and resolved config) as JSON, "
                        "instead of a run id: what the Snakemake workflow passes")
    _grid_options(submit)
    submit.add_argument("--executor", choices=list(EXECUTORS),
                        help="; ".join(f"{name}: {cls.description}" for name, cls in EXECUTORS.items())
                        + " (default: the workflow's, from $DLAREPRO_EXECUTOR, else local)")
    submit.add_argument("--options", metavar="JSON", help="executor options as a JSON object: " + "; ".join(
        f"{name}: {', '.join(cls.options) or 'none'}" for name, cls in EXECUTORS.items()))
    submit.add_argument("--poll-seconds", type=float,
                        help="how often to check the job (the waiting submissions of one workflow share one "
                             "SLURM query per interval; default: the workflow's, else 10)")
    submit.add_argument("--done", metavar="FILE", help="write this stamp once the run is finished (the "
                        "workflow's output for the run; the run folder itself is never a workflow output)")
    submit.set_defaults(func=cmd_submit)

    from .data.cli import register as register_data_commands
    from .reports.cli import register as register_report_commands

    register_data_commands(sub)
    register_report_commands(sub)
    return parser


def _training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="run config (YAML mapping of the keys below)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override any key, e.g. lr=0.05 "
                                                                           "milestones=[2,3]")
    parser.add_argument("--print-config", action="store_true", help="validate, print the resolved config, exit")
    parser.add_argument("--list-recipes", action="store_true", help="list the named recipes and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    parser.add_argument("--json", action="store_true", help="print metrics.json's content when done")


def _train_epilog(kind) -> str:
    lines = ["run keys:"]
    lines += [f"  {k:<22} {key.expected}" + (f" (default {key.default})" if key.default is not None else "")
              for k, key in kind.config.RUN_KEYS.items()]
    lines += [f"recipe keys (defaults from the recipe: {', '.join(kind.config.recipe_names())}):"]
    lines += [f"  {k:<22} {key.expected}" for k, key in kind.config.RECIPE_KEYS.items()]
    lines += ["", "exit status: 0 finished, 2 bad config or data, or the run folder held by another process "
              "(one writer per folder: the message names it), 3 stopped by SIGTERM/SIGUSR2 (checkpoint written; "
              "run again to resume)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CliError as err:
        print(f"dla-repro {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `dla-repro grid list | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
