#!/usr/bin/env python
"""Time one training step of every method at several depths on the CPU, side by side.

Every model is stepped in interleaved rounds with the plain ResNet of the same depth, in one fresh
process, so noise from the machine hits both alike; the table gives medians and that ratio, the peak resident memory of one step (fresh subprocess per model), the
bytes autograd saves for backward, and the MAC ratio. The targets of the model-zoo issue are
checked at the end. Run: ``python bench/step_time.py`` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys

import torch
from tabulate import tabulate

from dlarepro.bench import StepSetup, peak_cuda_of_step, peak_rss_of_step, saved_bytes, time_pair_in_subprocess
from dlarepro.modelinfo import count_macs
from dlarepro.methods import METHODS
from dlarepro.models import build_model

ARCHS = list(METHODS)

PAIRS = [("mrla_b", "dla_b", 110)]  # direct head-to-head timings (same process)
TARGETS = [  # (description, key, metric, limit)
    ("DLA-L-56 / ResNet-56 time", ("dla_l", 56), "ratio", 1.5),
    ("MRLA-L-56 / ResNet-56 time", ("mrla_l", 56), "ratio", 1.3),
    ("DLA-B-110 / MRLA-B-110 time", ("dla_b", 110, "mrla_b"), "time", 1.2),
    ("DLA-B-110 / MRLA-B-110 peak memory", None, "rss", 1.3),
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
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cuda: time on the GPU (peak memory from the CUDA allocator, not RSS)")
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"], help="autocast precision")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    archs = ["none"] + [a for a in args.archs if a != "none"]

    rows, results = [], {}
    make = lambda arch, depth: StepSetup(arch, depth, batch=args.batch, channels_last=not args.contiguous,
                                         compile=args.compile, device=args.device, amp=args.amp)
    for depth in args.depths:
        base_macs = count_macs(build_model("none", depth, "cifar100"), "cifar100")
        for arch in archs:
            print(f"{arch}-{depth}: {args.rounds} rounds interleaved with none-{depth} ...", file=sys.stderr, flush=True)
            base, setup = make("none", depth), make(arch, depth)
            t_base, t = time_pair_in_subprocess(base, setup, args.rounds, args.threads)
            if arch == "none":  # the reference itself (its pair only measured the noise)
                t_base = t = min(t_base, t)
            rss = None if args.no_memory else (peak_cuda_of_step(setup) if args.device == "cuda"
                                               else peak_rss_of_step(setup))
            macs = count_macs(build_model(arch, depth, "cifar100"), "cifar100")
            results[(arch, depth)] = {"time": t, "ratio": t / t_base, "rss": rss}
            rows.append([f"{arch}-{depth}", f"{t * 1000:.0f}", f"{t / t_base:.2f}",
                         "-" if rss is None else f"{rss / 2**20:.0f}", f"{saved_bytes(setup) / 2**20:.0f}",
                         f"{macs / base_macs:.2f}"])
            print("  " + "  ".join(rows[-1]), file=sys.stderr, flush=True)  # partial results as they come
    for (a, b, depth) in PAIRS:
        if (a, depth) in results and (b, depth) in results:
            print(f"{b}-{depth} vs {a}-{depth} ...", file=sys.stderr, flush=True)
            t_a, t_b = time_pair_in_subprocess(make(a, depth), make(b, depth), args.rounds, args.threads)
            results[(b, depth, a)] = {"time": t_b / t_a}
    where = f"GPU {torch.cuda.get_device_name()}, {args.amp}" if args.device == "cuda" else f"CPU, {args.threads} threads"
    print(f"\nOne SGD step, batch {args.batch}, {where}, "
          f"{'NCHW' if args.contiguous else 'channels_last'}{', torch.compile' if args.compile else ''}, "
          f"median of {args.rounds} rounds, each model interleaved with the plain ResNet of its depth in one "
          f"process (torch {torch.__version__})")
    peak = "peak GPU MiB" if args.device == "cuda" else "peak RSS MiB"
    print(tabulate(rows, headers=["model", "ms/step", "x ResNet", peak, "saved for bw MiB", "MACs x"],
                   disable_numparse=True))

    checks = []
    for text, key, metric, limit in TARGETS:
        if key is None:  # peak memory: two separate fresh processes
            a, b = results.get(("mrla_b", 110), {}), results.get(("dla_b", 110), {})
            ratio = b["rss"] / a["rss"] if a.get("rss") and b.get("rss") else None
        else:
            ratio = results.get(key, {}).get(metric)
        if ratio is not None:
            checks.append([text, f"{ratio:.2f}", f"<= {limit}", "met" if ratio <= limit else "NOT met"])
    if checks:
        print("\nTargets of the model-zoo issue")
        print(tabulate(checks, headers=["ratio", "measured", "target", ""], disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
