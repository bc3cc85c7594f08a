"""The ``dla-repro`` command line (also ``python -m dlarepro``). Entry points stay thin: the logic
lives in the package modules they call."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .archspec import ARCHS, CELLS, DATASETS, SIGMAS


class CliError(Exception):
    """A user error: printed as one line on stderr, exit status 2, no traceback."""


def _knobs(args: argparse.Namespace) -> dict:
    knobs = {}
    for name in ("cell", "sigma", "reduction", "drop_path"):
        value = getattr(args, name, None)
        if value is not None:
            knobs[name] = value
    return knobs


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
    from .config import recipe_names, resolve

    return _run_training(args, "train", recipe_names, resolve)


def cmd_detect(args: argparse.Namespace) -> int:
    from .detection.config import recipe_names, resolve

    return _run_training(args, "detect", recipe_names, resolve)


def _run_training(args: argparse.Namespace, command: str, recipe_names, resolver) -> int:
    """Shared by ``train`` and ``detect``: validate, then train (or print the config / recipes)."""
    import yaml

    from .config import ConfigError, load_run_config

    if args.list_recipes:
        print("\n".join(recipe_names()))
        return 0
    try:
        config = load_run_config(args.config, args.overrides, resolver)
    except ConfigError as err:
        raise CliError(str(err)) from None
    if args.print_config:
        print(yaml.safe_dump(config, sort_keys=True), end="")
        return 0
    from .data import DatasetError
    from .detection.config import PretrainedWeightsError
    from .train import Interrupted, train_any

    try:
        metrics = train_any(config, progress=False if args.no_progress else None)
    except (DatasetError, PretrainedWeightsError) as err:
        raise CliError(str(err)) from None
    except Interrupted as err:
        print(f"dla-repro {command}: {err}", file=sys.stderr)
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
    from .prepare import DataNotAvailable, prepare_data

    g = _grid(args)
    try:
        if args.action == "list":
            for run_id, run in grid.expand(g, args.profile).items():
                print(run_id if not args.long else f"{run_id}\t{','.join(sorted(run.experiments))}")
        elif args.action == "summary":
            print(grid.summary(g, args.profile))
        elif args.action == "config":
            print(yaml.safe_dump(grid.run_config(g, args.run_id, args.profile), sort_keys=True), end="")
        elif args.action == "prepare-data":
            print(prepare_data(g, args.profile, datasets=args.datasets or None))
    except (grid.GridError, DataNotAvailable) as err:
        raise CliError(str(err)) from None
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from .submit import SubmitError, submit_run

    g = _grid(args)
    slurm = json.loads(args.slurm) if args.slurm else {}
    try:
        return submit_run(g, args.run_id, args.profile, executor=args.executor, slurm=slurm,
                          poll_seconds=args.poll_seconds)
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
    info.add_argument("--arch", choices=ARCHS, help="layer-interaction method (registry name)")
    info.add_argument("--depth", type=int, help="CIFAR: 9n+2 (20, 56, 110, ...); ImageNet: 50 or 101")
    info.add_argument("--dataset", choices=list(DATASETS), help="decides the family and the number of classes")
    info.add_argument("--cell", choices=CELLS, help="recurrent cell: dla_b/dla_l (dsu, rnn, lstm, dia; Table 4), "
                                                    "dia (dia, lstm, dsu; Table 6)")
    info.add_argument("--sigma", choices=list(SIGMAS), help="DSU state normalisation (Table 5), default sigmoid")
    info.add_argument("--reduction", type=int, help="reduction of the DSU/DIA cells (default 4; ImageNet 16)")
    info.add_argument("--table", action="store_true", help="check every paper model against the paper's #P; "
                                                          "exit status 1 on an unexplained mismatch")
    info.add_argument("--json", action="store_true", help="machine-readable output (one JSON object, or "
                                                         "a list of rows with --table)")
    info.set_defaults(func=cmd_model_info)

    train = sub.add_parser(
        "train", help="train one run (resumes from the run folder's checkpoint)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one run defined by a YAML config plus key=value overrides.",
        epilog=_train_epilog(),
    )
    _training_options(train)
    train.set_defaults(func=cmd_train)

    detect = sub.add_parser(
        "detect", help="train and evaluate one COCO detection run (Faster / Mask R-CNN; resumes)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a Faster or Mask R-CNN with FPN on an ImageNet backbone of the zoo (pretrained: the "
                    "folder of its finished ImageNet run) with the COCO 1x schedule, then score it with "
                    "pycocotools (box AP; mask AP for Mask R-CNN) into metrics.json.",
        epilog=_train_epilog(detection=True),
    )
    _training_options(detect)
    detect.set_defaults(func=cmd_detect)

    grid = sub.add_parser("grid", help="inspect the experiment grid, prepare a profile's data",
                          description="The declared experiment grid (params.yaml) expanded into runs.")
    grid_actions = grid.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in [("list", "every run id of the profile"), ("summary", "number of runs per experiment"),
                       ("config", "the training config of one run"),
                       ("prepare-data", "generate (synthetic) or download (real) the profile's data")]:
        action = grid_actions.add_parser(name, help=text, description=text)
        _grid_options(action)
        if name == "config":
            action.add_argument("run_id")
        if name == "list":
            action.add_argument("--long", action="store_true", help="also show the experiments of each run")
        if name == "prepare-data":
            action.add_argument("--datasets", nargs="+", metavar="DATASET",
                                help="only these datasets (default: every dataset the profile's runs use)")
        action.set_defaults(func=cmd_grid)

    submit = sub.add_parser(
        "submit", help="submit one run of the grid through submitit and wait for it (a Snakemake job)",
        description="Validate the run and its data, submit it through submitit (or re-attach to its job if "
                    "one is still pending or running), wait, and exit 0 once metrics.json exists. On failure "
                    "the error and the log paths are printed and the exit status is 1.",
    )
    submit.add_argument("run_id", help="a run id of the grid (see: dla-repro grid list)")
    _grid_options(submit)
    submit.add_argument("--executor", choices=["slurm", "local", "debug"], default="local")
    submit.add_argument("--slurm", metavar="JSON", help="SLURM options: partition, account, gpus_per_node, "
                        "cpus_per_task, mem_gb, timeout_min, signal_delay_s, max_num_timeout, additional_parameters")
    submit.add_argument("--poll-seconds", type=float, default=10.0, help="how often to check the job")
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


def _train_epilog(detection: bool = False) -> str:
    if detection:
        from .detection.config import RECIPE_KEYS, RUN_KEYS
    else:
        from .config import RECIPE_KEYS, RUN_KEYS

    lines = ["run keys:"]
    lines += [f"  {k:<22} {key.expected}" + (f" (default {key.default})" if key.default is not None else "")
              for k, key in RUN_KEYS.items()]
    lines += ["recipe keys (defaults from the recipe: coco)" if detection else
              "recipe keys (defaults from the recipe, cifar for CIFAR and imagenet for ImageNet):"]
    lines += [f"  {k:<22} {key.expected}" for k, key in RECIPE_KEYS.items()]
    lines += ["", "exit status: 0 finished, 2 bad config or data, 3 stopped by SIGTERM/SIGUSR2 (checkpoint "
              "written; run again to resume)"]
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
