"""The benchmark: its memory probe (a step's peak RSS is seen even when start-up peaked higher), its
profile summary by operator family, its kernel-floor table, loading the official models from a scratch checkout,
and the targets' verdicts against the noise (a distribution-free interval for the median)."""

from __future__ import annotations

import ctypes
import random

import pytest
import torch

from dlarepro.bench import (StepSetup, median_interval, off_target_settings, pooled_rounds, step_peak_rss,
                            target_checks, verdict)


def release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc), whatever this process's allocator settings are
    (a test that ran a job in this process may have made it keep its memory: hostmemory)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def test_step_peak_is_measured_after_a_higher_earlier_peak():
    big = torch.ones(400 * 2**20 // 4)  # 400 MiB touched, then freed: ru_maxrss would hide what follows
    del big
    release_freed_memory()
    measure = step_peak_rss()

    def step():
        x = torch.ones(150 * 2**20 // 4)  # 150 MiB
        del x

    peak = measure(step)
    assert 140 * 2**20 <= peak <= 260 * 2**20
    assert measure(lambda: None) < 20 * 2**20


def test_profile_families_name_the_kind_of_work():
    from dlarepro.benchprofile import family

    assert family("aten::mkldnn_convolution") == family("aten::convolution_backward") == "convolution fwd + bwd"
    assert family("aten::native_batch_norm_backward") == "batch norm fwd + bwd"
    assert family("aten::addcmul") == family("aten::add_") == family("aten::sum") == \
        "element-wise + reductions, op by op"
    assert family("## Call CompiledFxGraph fabc ##") == family("LightTailBackward") == family("BaseJoin") == \
        "fused tails (native or compiled kernels)"
    assert family("LightHeadBackward") == family("ChannelConvFunction") == family("DSUGates") == \
        "per-block vectors (queries, keys, heads, DSU gates)"
    assert family("aten::addmm") == "matrix products (cells, heads, fc)"
    assert family("aten::empty") == "other (allocation, autograd, Python)"


def test_profile_table_adds_up_and_subtracts_the_baseline():
    from dlarepro.benchprofile import FAMILIES, profile_table

    zero = {name: (0.0, 0.0) for name, _ in FAMILIES}
    base = {**zero, "convolution fwd + bwd": (100.0, 10.0), "batch norm fwd + bwd": (50.0, 5.0)}
    other = {**zero, "convolution fwd + bwd": (130.0, 14.0), "fused tails (native or compiled kernels)": (40.0, 3.0)}
    rows = {row[0]: row[1:] for row in profile_table({"none-20": base, "dla_l-20": other}, "none-20")}
    assert rows["convolution fwd + bwd"] == ["100 (10)", "130 (14)", "+30"]
    assert rows["batch norm fwd + bwd"] == ["50 (5)", "0 (0)", "-50"]
    assert rows["total"] == ["150 (15)", "170 (17)", "+20"]


def test_a_profile_of_a_real_step_counts_the_fused_tails():
    from dlarepro.benchprofile import profile_families

    fams = profile_families(StepSetup("mrla_l", 11, batch=2, tails="eager"), steps=1, warmup=1)
    assert fams["convolution fwd + bwd"][0] > 0
    assert fams["fused tails (native or compiled kernels)"][1] > 0, "the tails' autograd Functions ran"
    assert fams["per-block vectors (queries, keys, heads, DSU gates)"][1] > 0


def test_official_models_load_from_a_checkout_and_run_where_the_bench_runs(tmp_path):
    """A stand-in for the official file layout: its ``.cuda()`` calls run on the bench's device."""
    from dlarepro.bench import OFFICIAL_CIFAR, official_model

    folder = tmp_path / OFFICIAL_CIFAR
    folder.mkdir(parents=True)
    (folder / "dla_l.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self, depth, num_classes, block_name):\n"
        "        super().__init__()\n"
        "        self.args = (depth, num_classes, block_name)\n"
        "    def forward(self, x):\n"
        "        return x + torch.zeros(1).cuda()\n"
        "def dla_l(**kwargs):\n"
        "    return Net(**kwargs)\n")
    model = official_model(str(tmp_path), "dla_l", 56, 100)
    assert model.args == (56, 100, "bottleneck")
    torch.testing.assert_close(model(torch.ones(2)), torch.ones(2))
    with pytest.raises(FileNotFoundError, match="mrla_light.py not found"):
        official_model(str(tmp_path), "mrla_l", 56, 100)


def test_the_kernel_floor_table_times_every_kernel_at_every_stage():
    from dlarepro.benchkernels import CASES, depthwise_stencil, kernel_table, stage_shapes, stencil_taps, time_kernels

    x, weight = torch.randn(2, 8, 5, 7, dtype=torch.float64), torch.randn(8, 1, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(depthwise_stencil(x, stencil_taps(weight)),
                               torch.nn.functional.conv2d(x, weight, padding=1, groups=8))
    assert stage_shapes(56, 4) == [((4, 64, 32, 32), 6), ((4, 128, 16, 16), 6), ((4, 256, 8, 8), 6)]
    with pytest.raises(ValueError, match=r"9n\+2 .*got 50"):
        stage_shapes(50, 4)

    timings, per_step = time_kernels(11, batch=1, flavour="eager", rounds=1)
    assert len(timings) == 3 * (len(CASES) + 2)
    assert all(t.ms > 0 and t.floor_ms > 0 for t in timings)
    assert set(per_step) == {"dla_l", "mrla_l"}
    dla = sum(t.ms for t in timings if t.name in {c.name for c in CASES if "dla_l" in c.used_by})
    assert per_step["dla_l"][0] == pytest.approx(dla)  # one block per stage at depth 11
    headers, rows = kernel_table(timings)
    assert len(headers) == 2 + 3 and len(rows) == len(CASES) + 2
    assert all(cell.endswith("x)") for row in rows for cell in row[2:])


def test_an_impossible_depth_is_refused_before_anything_is_timed():
    import subprocess
    import sys

    from conftest import ENV, REPO

    done = subprocess.run([sys.executable, str(REPO / "bench" / "step_time.py"), "--kernels", "--depths", "56", "50"],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 2
    assert "--depths: CIFAR bottleneck depth must be 9n+2" in done.stderr and "got 50" in done.stderr
    assert "timing" not in done.stderr and "Traceback" not in done.stderr


def count_calls(modules) -> list[int]:
    """A list of call counts, one per module, that grows as they run (forward hooks)."""
    counts = []
    for i, module in enumerate(modules):
        counts.append(0)
        module.register_forward_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
    return counts


@pytest.mark.parametrize("arch", ["dla_l", "dla_b"])
def test_the_cells_benchmark_replays_the_models_dsu_calls(arch, monkeypatch):
    """``--cells`` replays, stage by stage, the cell calls a real model makes: as many, with as many
    tokens, in the same order."""
    from dlarepro.benchcells import stage_call_plan, stage_calls
    from dlarepro.models import build_model, native_vectors
    from dlarepro.models.cells import DSUCell

    seen = []
    real = native_vectors.cell_step
    monkeypatch.setattr(native_vectors, "cell_step",
                        lambda cell, x, *rest: seen.append(x.shape[0] if x.dim() == 3 else 0) or real(cell, x, *rest))
    model = build_model(arch, 29, "cifar10")
    hidden_paths = count_calls(m.cell.hidden_path for m in model.modules() if hasattr(m, "cell"))
    model(torch.randn(2, 3, 32, 32))
    assert seen == [n for n, _ in stage_call_plan(arch, 3)] * 3
    # one hidden path per context state (3 blocks: the zero state and 3 updates), shared by its readers
    assert hidden_paths == [4, 4, 4]
    cell = DSUCell(64)
    replay_paths = count_calls([cell.hidden_path])
    stage_calls(arch, 3, 2, 64, cell=cell)(False)
    assert replay_paths == [4]
    assert stage_call_plan("dla_b", 3) == [(0, True), (0, True), (2, False), (0, True), (4, False)]
    with pytest.raises(ValueError, match="no DSU calls to replay for 'mrla_b'"):
        stage_call_plan("mrla_b", 3)


def test_the_cells_benchmark_prints_both_gate_paths_per_stage_and_step():
    import subprocess
    import sys

    from conftest import ENV, REPO

    done = subprocess.run([sys.executable, str(REPO / "bench" / "step_time.py"), "--cells", "--depths", "20",
                           "--batch", "2", "--rounds", "1"], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith(("dla_l ", "dla_b "))]
    assert [(r[0], r[1], r[2]) for r in rows] == [(m, str(c), n) for c in (64, 128, 256)
                                                  for m, n in (("dla_l", "4"), ("dla_b", "3"))]
    assert all(float(r[-1]) < 1e-4 for r in rows), "native and torch's gates agree"
    totals = [line for line in done.stdout.splitlines() if line.startswith(("dla_l-20:", "dla_b-20:"))]
    assert len(totals) == 2 and all("ms native" in line for line in totals)


def test_the_median_interval_is_the_widest_order_statistics_needed_and_covers_as_it_claims():
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0]
    low, high, coverage = median_interval(values)
    assert (low, high) == (2.0, 8.0)  # 2nd and 8th of 9: 1 - 2 (1 + 9) / 512
    assert coverage == pytest.approx(1 - 20 / 512)
    assert median_interval(values[:4]) is None  # 4 values cover the median with 7/8 < 90 %
    assert median_interval(values, confidence=0.8)[:2] == (3.0, 7.0)
    # skewed noise, as a shared machine's: the interval covers the true median as often as it says
    rng, n, trials, median = random.Random(0), 9, 3000, 2.0 ** 0.5
    hits = 0
    for _ in range(trials):
        low, high, coverage = median_interval([rng.lognormvariate(0.0, 1.0) * median for _ in range(n)])
        hits += low <= median <= high
    assert abs(hits / trials - coverage) < 0.02


def test_a_target_straddled_by_the_noise_is_neither_met_nor_missed():
    assert verdict(1.5, 1.4, (1.3, 1.45, 0.96)) == "met"
    assert verdict(1.5, 1.6, (1.55, 1.7, 0.96)) == "NOT met"
    assert verdict(1.5, 1.45, (1.4, 1.6, 0.96)) == "within noise"
    assert verdict(1.5, 1.6, None) == "NOT met"
    targets = [("14", "A", ("a", 56), "ratio", 1.5), ("14", "B", ("b", 56), "ratio", 1.5),
               ("x", "memory", None, "rss", 1.3), ("14", "absent", ("c", 56), "ratio", 1.0)]
    results = {("a", 56): {"ratio": 1.42, "per_round": [1.40, 1.41, 1.42, 1.43, 1.44, 1.38, 1.39, 1.45, 1.46]},
               ("b", 56): {"ratio": 1.48, "per_round": [1.30, 1.40, 1.45, 1.48, 1.50, 1.55, 1.60, 1.70, 1.35]},
               ("mrla_b", 110): {"rss": 100.0}, ("dla_b", 110): {"rss": 120.0}}
    rows = target_checks(targets, results)
    assert [r[1] for r in rows] == ["A", "B", "memory"]  # nothing for what was not measured
    assert rows[0][2:] == ["1.42", "1.42 (1.39-1.45)", "<= 1.5", "met"]
    assert rows[1][3:] == ["1.48 (1.35-1.60)", "<= 1.5", "within noise"]
    assert rows[2][2:] == ["1.20", "-", "<= 1.3", "met"]


def test_pooled_rounds_time_every_setup_in_each_fresh_process():
    setups = [StepSetup("none", 20, batch=2), StepSetup("mrla_l", 20, batch=2)]
    times = pooled_rounds(setups, rounds=2, processes=2, threads=1)
    assert [len(t) for t in times] == [4, 4]  # 2 rounds from each of 2 processes, per setup
    assert all(t > 0 for run in times for t in run)


def test_targets_are_judged_only_at_the_settings_they_are_set_for():
    assert off_target_settings(64, 2, "cpu") is None
    assert off_target_settings(64, 16, "cuda") is None  # a GPU's ratios: batch 64, any host threads
    assert off_target_settings(2, 2, "cpu") == "batch 2, not 64"
    assert off_target_settings(2, 4, "cpu") == "batch 2, not 64; 4 threads, not 2"
