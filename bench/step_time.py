#!/usr/bin/env python
"""Time one training step of every method at several depths on the CPU, side by side.

Each depth is one measurement: its models are built once and stepped in interleaved rounds, so
noise from the machine hits all of them alike; the table gives medians and the ratio to the plain
ResNet of the same depth, the peak resident memory of one step (fresh subprocess per model), the
bytes autograd saves for backward, and the MAC ratio. The targets of the model-zoo issue are
checked at the end. Run: ``python bench/step_time.py`` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys

import torch
from tabulate import tabulate

from dlarepro.bench import StepSetup, median, peak_rss_of_step, saved_bytes, time_steps
from dlarepro.modelinfo import count_macs
from dlarepro.models import ARCHS, build_model

TARGETS = [  # (description, numerator, denominator, metric, limit)
    ("DLA-L-56 / ResNet-56 time", ("dla_l", 56), ("none", 56), "time", 1.5),
    ("MRLA-L-56 / ResNet-56 time", ("mrla_l", 56), ("none", 56), "time", 1.3),
    ("DLA-B-110 / MRLA-B-110 time", ("dla_b", 110), ("mrla_b", 110), "time", 1.2),
    ("DLA-B-110 / MRLA-B-110 peak memory", ("dla_b", 110), ("mrla_b", 110), "rss", 1.3),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per model (median is reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--contiguous", action="store_true", help="NCHW instead of channels_last")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model (slow to start)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    archs = ["none"] + [a for a in args.archs if a != "none"]

    rows, results = [], {}
    for depth in args.depths:
        setups = [StepSetup(a, depth, batch=args.batch, channels_last=not args.contiguous, compile=args.compile)
                  for a in archs]
        print(f"depth {depth}: timing {len(setups)} models x {args.rounds} rounds ...", file=sys.stderr, flush=True)
        times = time_steps(setups, args.rounds,
                           progress=lambda r, n: print(f"  round {r}/{n}", file=sys.stderr, flush=True))
        base_macs = count_macs(build_model("none", depth, "cifar100"), "cifar100")
        for i, s in enumerate(setups):
            t = median(times[i])
            rss = None if args.no_memory else peak_rss_of_step(s)
            macs = count_macs(build_model(s.arch, depth, "cifar100"), "cifar100")
            results[(s.arch, depth)] = {"time": t, "rss": rss}
            rows.append([f"{s.arch}-{depth}", f"{t * 1000:.0f}", f"{t / median(times[0]):.2f}",
                         "-" if rss is None else f"{rss / 2**20:.0f}", f"{saved_bytes(s) / 2**20:.0f}",
                         f"{macs / base_macs:.2f}"])
    print(f"\nOne SGD step, batch {args.batch}, CPU, {args.threads} threads, "
          f"{'NCHW' if args.contiguous else 'channels_last'}{', torch.compile' if args.compile else ''}, "
          f"median of {args.rounds} interleaved rounds (torch {torch.__version__})")
    print(tabulate(rows, headers=["model", "ms/step", "x ResNet", "peak RSS MiB", "saved for bw MiB", "MACs x"],
                   disablenumparse=True))

    checks = []
    for text, num, den, metric, limit in TARGETS:
        if num in results and den in results and results[num][metric] is not None:
            ratio = results[num][metric] / results[den][metric]
            checks.append([text, f"{ratio:.2f}", f"<= {limit}", "met" if ratio <= limit else "NOT met"])
    if checks:
        print("\nTargets of the model-zoo issue")
        print(tabulate(checks, headers=["ratio", "measured", "target", ""], disablenumparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
