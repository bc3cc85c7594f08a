"""Training-step cost of every method, measured side by side (used by ``bench/step_time.py``).

Time: one SGD step (forward, backward, update) per model, models interleaved round by round in
one process so machine noise hits all of them alike; the median per model is divided by the
median of the plain ResNet of the same depth. Memory: peak resident memory of one step, each model
in a fresh subprocess (CPU tensors have no allocator statistics), and the bytes autograd saves for
backward (exact and repeatable).
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .methods import DATASETS
from .models import build_model
from .models.tails import set_tails


#: the official implementation's CIFAR model of each method: (file under ``OFFICIAL_CIFAR``, builder)
OFFICIAL_MODELS = {"none": ("resnet.py", "resnet"), "mrla_l": ("mrla_light.py", "mrla_light"),
                   "dla_l": ("dla_l.py", "dla_l"), "mrla_b": ("mrla_base.py", "mrla_base"), "dla_b": ("dla_b.py", "dla_b")}
OFFICIAL_CIFAR = Path("image_classification/cifar/models/cifar")


def official_model(root: str, arch: str, depth: int, num_classes: int, device: str = "cpu") -> torch.nn.Module:
    """The official code's CIFAR model of ``arch`` from a checkout of tunantu/Dynamic-Layer-Attention
    at ``root`` (a scratch folder: the project never holds that code). Each file is loaded on its
    own, so a missing optional dependency of one model (einops) does not hide the others. The DLA
    files create their DSU states with ``.cuda()``; those calls are read as ``.to(device)`` so the
    code runs where the benchmark runs (nothing else is changed)."""
    if arch not in OFFICIAL_MODELS:
        raise ValueError(f"the official repository has no CIFAR model for {arch!r}")
    filename, builder = OFFICIAL_MODELS[arch]
    path = Path(root) / OFFICIAL_CIFAR / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {root} a checkout of tunantu/Dynamic-Layer-Attention?")
    module = types.ModuleType(f"official_{arch}")
    module.__file__ = str(path)
    module.__dict__["_bench_device"] = torch.device(device)
    source = path.read_text().replace(".cuda()", ".to(_bench_device)")
    exec(compile(source, str(path), "exec"), module.__dict__)
    return getattr(module, builder)(depth=depth, num_classes=num_classes, block_name="bottleneck")


@dataclass
class StepSetup:
    arch: str
    depth: int
    dataset: str = "cifar100"
    batch: int = 64
    channels_last: bool = True
    compile: bool = False
    #: layer-attention tails: a mode of :mod:`dlarepro.models.tails` (None: ``DLAREPRO_TAILS``)
    tails: str | None = None
    device: str = "cpu"
    #: autocast precision: a mode of :data:`dlarepro.runconfig.AMP_MODES`
    amp: str = "off"
    #: build the official implementation from this checkout instead of ours
    official: str | None = None
    #: input height and width (None: the dataset's, 224 or 32)
    image_size: int | None = None

    def label(self) -> str:
        return f"{'official ' if self.official else ''}{self.arch}-{self.depth}"

    def build(self):
        from .speed import autocast

        torch.manual_seed(0)
        if self.official:
            model = official_model(self.official, self.arch, self.depth, DATASETS[self.dataset], self.device)
        else:
            model = set_tails(build_model(self.arch, self.depth, self.dataset), self.tails)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        device = torch.device(self.device)
        model = model.to(device=device, memory_format=fmt).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=True)  # as training
        size = self.image_size or (224 if self.dataset == "imagenet" else 32)
        x = torch.randn(self.batch, 3, size, size, device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (self.batch,), device=device)
        forward = torch.compile(model) if self.compile else model

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast(self.amp, device):
                loss = F.cross_entropy(forward(x), y)
            loss.backward()
            opt.step()
            if device.type == "cuda":  # the step is done when the GPU is, not when it is queued
                torch.cuda.synchronize(device)

        return model, step


def saved_bytes(setup: StepSetup) -> int:
    """Bytes of the tensors autograd keeps for backward in one forward pass (deduplicated by storage)."""
    model, _ = setup.build()
    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    x = torch.randn(setup.batch, 3, 32, 32, device=setup.device)
    if setup.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in params)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def step_peak_rss() -> Callable[[Callable[[], None]], int]:
    """A function that runs a step and returns its peak RSS above the RSS just before it (bytes).

    ``ru_maxrss`` only ever grows: in a process whose start-up (imports, model building) once
    held more memory than the step does, a step's peak never shows in it (the bench printed 0).
    Linux resets the high-water mark (VmHWM) when "5" is written to /proc/self/clear_refs.
    """

    def measure(step: Callable[[], None]) -> int:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
        step()
        return max(0, _status_kib("VmHWM") - before) * 1024

    return measure


def peak_rss_of_step(setup: StepSetup) -> int:
    """Peak RSS increase (bytes) of one training step, in a fresh interpreter."""
    code = (
        "import json, sys, torch\n"
        "from dlarepro.bench import StepSetup, step_peak_rss\n"
        "torch.set_num_threads(2)\n"
        "s = StepSetup(**json.loads(sys.argv[1]))\n"
        "model, step = s.build()\n"
        "print(json.dumps(step_peak_rss()(step)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, json.dumps(setup.__dict__)],
                         check=True, capture_output=True, text=True)
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


def peak_cuda_of_step(setup: StepSetup) -> int:
    """Peak CUDA memory (bytes) the allocator held during one training step after a warm-up step."""
    model, step = setup.build()
    step()
    torch.cuda.reset_peak_memory_stats()
    step()
    return torch.cuda.max_memory_allocated()


def time_steps(setups: list[StepSetup], rounds: int, warmup: int = 2, progress=None) -> dict[int, list[float]]:
    """Seconds per step for each setup, interleaving the setups in every round.

    Call it in a process that keeps freed memory (:func:`.hostmemory.keep_freed_memory`, as
    :func:`time_group_in_subprocess` does), as training does: otherwise every step pays page faults
    for its fresh maps, which hides how the step's own work compares (README, benchmark)."""
    built = [s.build()[1] for s in setups]
    for step in built:
        for _ in range(warmup):
            step()
    times: dict[int, list[float]] = {i: [] for i in range(len(setups))}
    for r in range(rounds):
        for i, step in enumerate(built):
            start = time.perf_counter()
            step()
            times[i].append(time.perf_counter() - start)
        if progress:
            progress(r + 1, rounds)
    return times


def time_group_in_subprocess(setups: list[StepSetup], rounds: int, threads: int) -> list[list[float]]:
    """Seconds per step of every setup, interleaved round by round in one fresh process that keeps
    its freed memory, as a training process does (a few models at a time: four depth-110 models
    stepped in turn held 5.5 GB resident, as many as with glibc's defaults)."""
    code = (
        "import json, sys, torch\n"
        "from dlarepro.bench import StepSetup, time_steps\n"
        "from dlarepro.hostmemory import keep_freed_memory\n"
        "keep_freed_memory()\n"
        "torch.set_num_threads(int(sys.argv[1]))\n"
        "setups = [StepSetup(**s) for s in json.loads(sys.argv[3])]\n"
        "t = time_steps(setups, int(sys.argv[2]))\n"
        "print(json.dumps([t[i] for i in range(len(setups))]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(threads), str(rounds),
                          json.dumps([s.__dict__ for s in setups])], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"timing {[s.label() for s in setups]} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def pooled_rounds(setups: list[StepSetup], rounds: int, processes: int, threads: int) -> list[list[float]]:
    """Seconds per step of every setup: ``rounds`` interleaved rounds in each of ``processes`` fresh
    processes (:func:`time_group_in_subprocess`), run one after another, pooled in that order. A
    process's own luck (where its memory landed, what else ran then) shows between processes, not
    between the rounds of one."""
    times: list[list[float]] = [[] for _ in setups]
    for _ in range(processes):
        for pooled, run in zip(times, time_group_in_subprocess(setups, rounds, threads)):
            pooled.extend(run)
    return times


def median_interval(values: Sequence[float], confidence: float = 0.9) -> tuple[float, float, float] | None:
    """A distribution-free confidence interval for the median of what ``values`` sample: the order
    statistics ``x_(k)`` and ``x_(n+1-k)`` with the largest ``k`` whose coverage, ``1 - 2 P(Bin(n, 1/2)
    < k)``, is at least ``confidence``. Returns ``(low, high, coverage)``, or None when even the
    sample's range covers less (fewer than 5 values at 90 %). Nothing is assumed about the shape of
    the noise, which on a shared machine is anything but normal."""
    xs, n = sorted(values), len(values)
    interval = None
    for k in range(1, n // 2 + 1):
        coverage = 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n
        if coverage < confidence:
            break
        interval = (xs[k - 1], xs[n - k], coverage)
    return interval


def verdict(limit: float, ratio: float, interval: tuple[float, float, float] | None = None) -> str:
    """A target ``ratio <= limit``, judged against the noise: "met" when the measured ratio and the
    whole interval (:func:`median_interval` of the per-round ratios) are within the limit, "NOT met"
    when they are all above it, "within noise" when the interval straddles it. Without an interval
    (one measurement, or too few rounds) the ratio alone decides."""
    if interval is None:
        return "met" if ratio <= limit else "NOT met"
    low, high, _ = interval
    if high <= limit and ratio <= limit:
        return "met"
    if low > limit and ratio > limit:
        return "NOT met"
    return "within noise"


#: the settings the issues' time targets are set for: batch 64, and on the CPU 2 threads
TARGET_BATCH, TARGET_CPU_THREADS = 64, 2


def off_target_settings(batch: int, threads: int, device: str) -> str | None:
    """Why a run's ratios cannot be judged against the targets (they are set for batch
    :data:`TARGET_BATCH`, and :data:`TARGET_CPU_THREADS` threads on the CPU), or None if they can:
    at batch 2 a step is mostly per-operator cost, and the ratios mean something else."""
    problems = []
    if batch != TARGET_BATCH:
        problems.append(f"batch {batch}, not {TARGET_BATCH}")
    if torch.device(device).type == "cpu" and threads != TARGET_CPU_THREADS:
        problems.append(f"{threads} threads, not {TARGET_CPU_THREADS}")
    return "; ".join(problems) or None


def target_checks(targets, results: dict) -> list[list[str]]:
    """Rows ``[issue, text, measured, per-round median (interval), target, verdict]`` of the targets
    ``(issue, text, key, metric, limit)`` that ``results`` (key -> {metric: ratio, "per_round": [...]})
    measured. A key of None is the B methods' peak-memory ratio at depth 110 (two processes, one
    measurement each)."""
    rows = []
    for issue, text, key, metric, limit in targets:
        if key is None:
            a, b = results.get(("mrla_b", 110), {}), results.get(("dla_b", 110), {})
            ratio, per_round = (b["rss"] / a["rss"] if a.get("rss") and b.get("rss") else None), None
        else:
            ratio, per_round = results.get(key, {}).get(metric), results.get(key, {}).get("per_round")
        if ratio is None:
            continue
        interval = median_interval(per_round) if per_round else None
        shown = "-" if interval is None else "{:.2f} ({:.2f}-{:.2f})".format(statistics.median(per_round),
                                                                            *interval[:2])
        rows.append([issue, text, f"{ratio:.2f}", shown, f"<= {limit}", verdict(limit, ratio, interval)])
    return rows
