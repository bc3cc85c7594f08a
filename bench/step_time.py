#!/usr/bin/env python
"""Time one training step of every method beside the plain ResNet of the same depth.

Every model is stepped in interleaved rounds with the ResNet of its depth, in one fresh process, so
noise from the machine (shared cores) hits both alike; the table gives medians, their ratio and the
range of the per-round ratios (how noisy the rounds were), the peak resident memory of one step
(fresh subprocess per model), the bytes autograd saves for backward and the MAC ratio. The targets
of the issues are checked at the end, each judged met, NOT met or within noise by a 90 % interval
for the median of its per-round ratios (use 9 rounds or more for a useful interval).

  python bench/step_time.py --depths 56                 # the fused tails, compiled
  python bench/step_time.py --depths 56 --compare-tails # ... and the reference tails beside them
  python bench/step_time.py --depths 56 --tails native --compare-tails compiled   # native tails beside compiled
  python bench/step_time.py --best-format               # each model at its faster memory format
  python bench/step_time.py --official /scratch/Dynamic-Layer-Attention   # the official code beside ours
  python bench/step_time.py --profile --archs dla_l     # where the time goes, by operator family
  python bench/step_time.py --kernels --depths 56       # each tail kernel beside its memory floor
  python bench/step_time.py --traffic --depths 56       # bytes a step must move, by operator family (exact)
  python bench/step_time.py --traffic --tails native    # ... with the native tails, the CPU's default
  python bench/step_time.py --stencil-tails --depths 56 # tails native (stencils inside, C++) beside compiled
  python bench/step_time.py --cells --depths 56         # DLA's DSU calls of a step, torch's gates beside C++
  python bench/step_time.py --device cuda --amp bf16    # on a GPU, autocast to bfloat16

The official code is read from a checkout in a scratch folder (never part of this project).
A full run takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys

import torch
from tabulate import tabulate

from dlarepro.bench import (OFFICIAL_MODELS, StepSetup, off_target_settings, official_model, peak_cuda_of_step,
                            peak_rss_of_step, pooled_rounds, saved_bytes, target_checks)
from dlarepro.benchcells import cells_table, per_step, time_cells
from dlarepro.benchkernels import kernel_table, time_kernels
from dlarepro.benchprofile import profile_families, profile_table
from dlarepro.benchstencil import per_step_saving, stencil_table, time_stencil_base_tails, time_stencil_tails
from dlarepro.native import BuildError
from dlarepro.benchtraffic import step_traffic, traffic_table
from dlarepro.hostmemory import keep_freed_memory
from dlarepro.methods import METHODS, check_depth
from dlarepro.modelinfo import count_macs
from dlarepro.models import build_model
from dlarepro.models.interactions import INTERACTIONS, LayerAttentionBase
from dlarepro.models.tails import MODES
from dlarepro.runconfig import AMP_MODES

ARCHS = list(METHODS)
PAIRS = [("mrla_b", "dla_b", 110)]  # direct head-to-head timings (same process)
TARGETS = [  # (issue, description, key, metric, limit)
    ("model zoo", "DLA-B-110 / MRLA-B-110 time", ("dla_b", 110, "mrla_b"), "time", 1.2),
    ("model zoo", "DLA-B-110 / MRLA-B-110 peak memory", None, "rss", 1.3),
    ("14", "DLA-L-56 / ResNet-56 time", ("dla_l", 56), "ratio", 1.5),
    ("14", "MRLA-L-56 / ResNet-56 time", ("mrla_l", 56), "ratio", 1.3),
    ("14", "DLA-B-56 / ResNet-56 time", ("dla_b", 56), "ratio", 1.6),
    ("14", "MRLA-B-56 / ResNet-56 time", ("mrla_b", 56), "ratio", 1.6),
]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110])
    parser.add_argument("--archs", nargs="+", default=ARCHS, choices=ARCHS)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per model (median is reported)")
    parser.add_argument("--processes", type=int, default=1, metavar="N",
                        help="time every group in N fresh processes one after another and pool their rounds "
                             "(the verdicts then see how much a whole run varies, not only its rounds)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--contiguous", action="store_true", help="NCHW instead of channels_last")
    parser.add_argument("--best-format", action="store_true",
                        help="time channels_last and NCHW of every model; keep each model's faster one")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model (slow to start)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--tails", choices=MODES, default="compiled",
                        help="layer-attention tails (default: compiled, the fused tails; 'auto' runs 'native' on "
                             "the CPU where it applies, see models/tails.py)")
    parser.add_argument("--compare-tails", nargs="?", const="reference", choices=MODES, metavar="MODE",
                        help="also time every method with the tails in MODE (default: reference, op by op), same "
                             "process")
    parser.add_argument("--official", metavar="DIR",
                        help="checkout of tunantu/Dynamic-Layer-Attention: time its models beside ours")
    parser.add_argument("--profile", nargs="?", const=3, type=int, metavar="STEPS",
                        help="instead of timing: self time by operator family over STEPS steps (default 3)")
    parser.add_argument("--traffic", action="store_true",
                        help="instead of timing: the bytes one step's operators must read and write, by family, "
                             "with the fused (compiled, or with --tails native/auto the native) and the reference "
                             "tails (exact, no timing noise)")
    parser.add_argument("--kernels", action="store_true",
                        help="instead of timing steps: each fused tail kernel at each stage's map shape beside "
                             "its memory floor (CPU)")
    parser.add_argument("--stencil-tails", action="store_true",
                        help="instead of timing steps: MRLA-L's and DLA-L's light blocks after their "
                             "convolutions (join, depthwise convolutions, tail), and one stage of MRLA-B's and "
                             "DLA-B's base tails, forward + backward, native (C++, built with g++: the stencils "
                             "inside) beside the fused join and tails + the library's convolutions, at each stage's "
                             "map shape (CPU)")
    parser.add_argument("--cells", action="store_true",
                        help="instead of timing steps: the DSU cell calls of one training step of DLA-L and DLA-B "
                             "(context, refresh gates, DLA-B's refresh of every earlier token), forward + backward, "
                             "with torch's gate operators beside the native gates (C++), at each stage's width (CPU)")
    add_device_options(parser)
    args = parser.parse_args(argv)
    for depth in args.depths:  # a clear message before any model is built or timed
        try:
            check_depth(depth, "cifar100")
        except ValueError as error:
            parser.error(f"--depths: {error}")
    for name in ("rounds", "processes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    return args


def add_device_options(parser) -> None:
    """Where the step runs (kept apart: the GPU benches of issue 11 add to these)."""
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda[:N] (on a GPU, peak memory comes from the CUDA allocator, not RSS)")
    parser.add_argument("--amp", default="off", choices=AMP_MODES, help="autocast precision")


def formats(args) -> list[bool]:
    """The channels_last settings to time (True = channels_last)."""
    return [True, False] if args.best_format else [not args.contiguous]


def base_setup(args, arch: str, depth: int, **changes) -> StepSetup:
    setup = StepSetup(arch, depth, batch=args.batch, compile=args.compile, tails=args.tails, device=args.device,
                      amp=args.amp)
    return dataclasses.replace(setup, **changes)


def official_available(args, arch: str) -> bool:
    """Whether the official checkout builds ``arch`` here (its B models need einops)."""
    if not args.official or arch not in OFFICIAL_MODELS:
        return False
    try:
        official_model(args.official, arch, 20, 10)
    except ImportError as error:
        print(f"  official {arch}: not timed ({error})", file=sys.stderr)
        return False
    return True


def variants(args, arch: str, depth: int) -> dict[str, list[StepSetup]]:
    """What is timed in one process for ``arch``: name -> one setup per memory format. For the plain
    ResNet itself, "ours" is the "resnet" entry."""
    make = lambda a, **kw: [base_setup(args, a, depth, channels_last=cl, **kw) for cl in formats(args)]
    group = {"resnet": make("none")}
    if arch != "none":
        group["ours"] = make(arch)
        if args.compare_tails:
            group["compared tails"] = make(arch, tails=args.compare_tails)
    if official_available(args, "none"):
        group["official resnet"] = make("none", official=args.official)
        if arch != "none" and official_available(args, arch):
            group["official"] = make(arch, official=args.official)
    return group


def fastest(times: list[list[float]]) -> tuple[int, list[float]]:
    """Index and per-round times of the setup (memory format) with the lowest median."""
    i = min(range(len(times)), key=lambda k: statistics.median(times[k]))
    return i, times[i]


def time_arch(args, arch: str, depth: int) -> dict[str, dict]:
    """Median step time, format, ratio to the ResNet and the per-round ratios of each variant."""
    group = variants(args, arch, depth)
    flat = [s for setups in group.values() for s in setups]
    times = pooled_rounds(flat, args.rounds, args.processes, args.threads)
    out, k = {}, 0
    for name, setups in group.items():
        index, rounds = fastest(times[k:k + len(setups)])
        out[name] = {"setup": setups[index], "rounds": rounds, "time": statistics.median(rounds)}
        k += len(setups)
    out.setdefault("ours", out["resnet"])
    if "official resnet" in out:
        out.setdefault("official", out["official resnet"] if arch == "none" else None)
    out = {name: entry for name, entry in out.items() if entry is not None}
    for name, entry in out.items():
        base = out["official resnet" if name.startswith("official") else "resnet"]
        per_round = [t / b for t, b in zip(entry["rounds"], base["rounds"])]
        entry.update(ratio=entry["time"] / base["time"], per_round=per_round)
    return out


def run_profile(args) -> int:
    for depth in args.depths:
        columns = {}
        for arch in ["none"] + [a for a in args.archs if a != "none"]:
            setup = base_setup(args, arch, depth, channels_last=not args.contiguous)
            print(f"profiling {setup.label()} ...", file=sys.stderr, flush=True)
            columns[f"{setup.label()}"] = profile_families(setup, steps=args.profile)
        unit = "device" if torch.device(args.device).type == "cuda" else "CPU"
        print(f"\n{unit} self time per step, ms (calls), batch {args.batch}, {args.threads} threads, "
              f"{'NCHW' if args.contiguous else 'channels_last'}, mean of {args.profile} profiled steps")
        headers = ["family"] + list(columns) + [f"extra {c}" for c in list(columns)[1:]]
        print(tabulate(profile_table(columns, f"none-{depth}"), headers=headers, disable_numparse=True))
    return 0


def run_traffic(args) -> int:
    for depth in args.depths:
        columns = {}
        # the compiled tails' kernels are counted as declared, not run compiled: "eager" spares compiling them;
        # the native ones report the passes they make
        fused = "native" if args.tails in ("native", "auto") else "eager"
        for arch in ["none"] + [a for a in args.archs if a != "none"]:
            tailed = issubclass(INTERACTIONS[arch], LayerAttentionBase)
            for tails in [fused, "reference"] if tailed else [fused]:
                setup = base_setup(args, arch, depth, channels_last=not args.contiguous, tails=tails)
                label = f"{setup.label()} {'fused' if tails == 'eager' else tails}" if tailed else setup.label()
                print(f"counting {label} ...", file=sys.stderr, flush=True)
                columns[label] = step_traffic(setup)
        rule = ("a native kernel each map once per pass that reads or writes it" if fused == "native"
                else "the fused tails' statistics inputs twice")
        print(f"\nBytes one training step must move, GiB (operator calls), batch {args.batch}: each operator reads "
              f"its inputs once (batch norm twice, {rule}) and writes its outputs")
        headers = ["family"] + list(columns)
        print(tabulate(traffic_table(columns, f"none-{depth}"), headers=headers, disable_numparse=True))
    return 0


def run_kernels(args) -> int:
    flavour = "eager" if args.tails == "eager" else "compiled"
    for depth in args.depths:
        print(f"timing the tail kernels of depth {depth} ...", file=sys.stderr, flush=True)
        timings, per_step = time_kernels(depth, args.batch, channels_last=not args.contiguous, flavour=flavour,
                                         rounds=args.rounds)
        headers, rows = kernel_table(timings)
        print(f"\nTail kernels ({flavour}), batch {args.batch}, {args.threads} threads, "
              f"{'NCHW' if args.contiguous else 'channels_last'}, median of {args.rounds} calls; floor = passes x "
              f"half the time of copying one map (one read, one write)")
        print(tabulate(rows, headers=headers, disable_numparse=True))
        for method, (spent, floor) in per_step.items():
            print(f"{method}-{depth}: its tail kernels take {spent:.0f} ms per training step; "
                  f"{floor:.0f} ms at the floor")
    return 0


def run_stencil_tails(args) -> int:
    flavour = "eager" if args.tails == "eager" else "compiled"
    for depth in args.depths:
        print(f"checking and timing the light blocks of depth {depth} ...", file=sys.stderr, flush=True)
        try:
            timings = time_stencil_tails(depth, args.batch, rounds=args.rounds, flavour=flavour)
        except BuildError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print_stencil_timings(
            timings, depth, f"Light blocks after their convolutions (join, depthwise convolutions, tail), forward + "
            f"backward, batch {args.batch}, {args.threads} threads, channels_last, float32, caches flushed before each "
            f"call, median of {args.rounds}; 'max rel. difference': native against the library path over the "
            f"outputs (pools included), every gradient and the running statistics",
            "these joins, tails and convolutions", "native", headers=["maps", "fused join + library convs + fused tail ms"])
        print(f"checking and timing the base tails of depth {depth} ...", file=sys.stderr, flush=True)
        timings = time_stencil_base_tails(depth, args.batch, rounds=args.rounds, flavour=flavour)
        print_stencil_timings(
            timings, depth, f"Base tails, one whole stage ({(depth - 2) // 9} blocks, value gradients summed per "
            f"map), forward + backward, same conditions; DLA-B's value maps pooled; the difference checked in "
            f"float64, with an image dropped (in float32 the ReLU after batch norm may decide an entry within "
            f"rounding of zero either way: benchstencil.base_stage_difference)",
            "these tails and value convolutions", "native", headers=["stage maps", "library convs + fused tails ms"])
    return 0


def run_cells(args) -> int:
    for depth in args.depths:
        print(f"checking and timing the DSU calls of depth {depth} ...", file=sys.stderr, flush=True)
        try:
            timings = time_cells(depth, args.batch, rounds=args.rounds)
        except BuildError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        headers, rows = cells_table(timings)
        print(f"\nDSU cell calls of one stage (matrix products and gates), forward + backward, batch {args.batch}, "
              f"{args.threads} threads, float32, median of {args.rounds} interleaved rounds; 'max abs. difference': "
              f"native against torch's gates over the last output and every gradient")
        print(tabulate(rows, headers=headers, disable_numparse=True))
        for method, (torch_ms, native_ms) in per_step(timings).items():
            print(f"{method}-{depth}: {torch_ms:.1f} ms per training step in its DSU calls with torch's gates, "
                  f"{native_ms:.1f} ms native ({native_ms - torch_ms:+.1f} ms)")
    return 0


def print_stencil_timings(timings, depth: int, title: str, spent_on: str, native_label: str,
                          headers: list[str] | None = None) -> None:
    """One table of ``--stencil-tails`` and each method's saving per training step; ``headers``
    renames the table's second and third columns."""
    names, rows = stencil_table(timings)
    if headers:
        names[1:3] = headers
    print(f"\n{title}")
    print(tabulate(rows, headers=names, disable_numparse=True))
    for method, (library_ms, stencil_ms) in per_step_saving(timings).items():
        print(f"{method}-{depth}: {library_ms:.0f} ms per training step in {spent_on}, {stencil_ms:.0f} ms "
              f"{native_label} ({library_ms - stencil_ms:.0f} ms less)")


def main(argv=None) -> int:
    args = parse_args(argv)
    keep_freed_memory()  # profiles and kernel timings without page faults, as in training (hostmemory)
    torch.set_num_threads(args.threads)
    if args.profile:
        return run_profile(args)
    if args.kernels:
        return run_kernels(args)
    if args.traffic:
        return run_traffic(args)
    if args.stencil_tails:
        return run_stencil_tails(args)
    if args.cells:
        return run_cells(args)
    archs = ["none"] + [a for a in args.archs if a != "none"]
    on_cpu = torch.device(args.device).type == "cpu"
    rows, results = [], {}
    for depth in args.depths:
        base_macs = count_macs(build_model("none", depth, "cifar100"), "cifar100")
        for arch in archs:
            print(f"{arch}-{depth}: {args.rounds} rounds interleaved with none-{depth}"
                  f"{f' in each of {args.processes} processes' if args.processes > 1 else ''} ...", file=sys.stderr,
                  flush=True)
            timed = time_arch(args, arch, depth)
            ours = timed["ours"]
            rss = None if args.no_memory else (peak_rss_of_step(ours["setup"]) if on_cpu
                                               else peak_cuda_of_step(ours["setup"]))
            macs = count_macs(build_model(arch, depth, "cifar100"), "cifar100")
            results[(arch, depth)] = {"time": ours["time"], "ratio": ours["ratio"], "rss": rss,
                                      "per_round": ours["per_round"]}
            row = [f"{arch}-{depth}", "CL" if ours["setup"].channels_last else "NCHW", f"{ours['time'] * 1000:.0f}",
                   f"{ours['ratio']:.2f}", f"{min(ours['per_round']):.2f}-{max(ours['per_round']):.2f}"]
            if args.compare_tails:
                ref = timed.get("compared tails", ours)  # the ResNet has no tails: its own time
                row += [f"{ref['time'] * 1000:.0f}", f"{ref['ratio']:.2f}"]
            if args.official:
                off = timed.get("official")
                row += ["-", "-", "-"] if off is None else [
                    f"{off['time'] * 1000:.0f}", f"{off['ratio']:.2f}", f"{ours['time'] / off['time']:.2f}"]
            row += ["-" if rss is None else f"{rss / 2**20:.0f}",
                    f"{saved_bytes(ours['setup']) / 2**20:.0f}" if on_cpu else "-", f"{macs / base_macs:.2f}"]
            rows.append(row)
            print("  " + "  ".join(row), file=sys.stderr, flush=True)  # partial results as they come
    for (a, b, depth) in PAIRS:
        if (a, depth) in results and (b, depth) in results:
            print(f"{b}-{depth} vs {a}-{depth} ...", file=sys.stderr, flush=True)
            pair = [base_setup(args, name, depth, channels_last=not args.contiguous) for name in (a, b)]
            t_a, t_b = pooled_rounds(pair, args.rounds, args.processes, args.threads)
            results[(b, depth, a)] = {"time": statistics.median(t_b) / statistics.median(t_a),
                                      "per_round": [x / y for x, y in zip(t_b, t_a)]}
    print_results(args, rows, results)
    return 0


def print_results(args, rows, results) -> None:
    tails = args.tails
    layout = "best of channels_last / NCHW" if args.best_format else "NCHW" if args.contiguous else "channels_last"
    print(f"\nOne SGD step, batch {args.batch}, {args.device}{'' if args.amp == 'off' else ' ' + args.amp}, {args.threads} threads, "
          f"{layout}{', torch.compile' if args.compile else ''}, tails {tails}, median of {args.rounds} rounds"
          f"{f' in each of {args.processes} processes (pooled)' if args.processes > 1 else ''}, each "
          f"model interleaved with the plain ResNet of its depth in one process (torch {torch.__version__})")
    headers = ["model", "format", "ms/step", "x ResNet", "per-round x"]
    headers += [f"{args.compare_tails} tails ms", f"{args.compare_tails} x ResNet"] if args.compare_tails else []
    headers += ["official ms", "official x its ResNet", "ours / official"] if args.official else []
    on_cpu = torch.device(args.device).type == "cpu"
    headers += ["peak RSS MiB" if on_cpu else "peak GPU MiB", "saved for bw MiB", "MACs x"]
    print(tabulate(rows, headers=headers, disable_numparse=True))
    checks = target_checks(TARGETS, results)
    off_target = off_target_settings(args.batch, args.threads, args.device)
    if checks and off_target:
        print(f"\nTargets not judged: they are set for other settings than this run's ({off_target})")
    elif checks:
        print("\nTargets: 'measured' is the ratio of the medians; beside it the median of the per-round ratios "
              "with a 90 % distribution-free interval (order statistics; '-': one measurement, or under 5 rounds). "
              "'within noise': the interval straddles the target")
        print(tabulate(checks, headers=["issue", "ratio", "measured", "per-round median (90 % interval)", "target",
                                        "verdict"], disable_numparse=True))


if __name__ == "__main__":
    sys.exit(main())
