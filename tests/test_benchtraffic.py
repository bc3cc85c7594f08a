"""The traffic count of the benchmark: the bytes each operator reads and writes, fused tail kernels
(compiled or native) counted as one operator each, and what the fused tails save on a real step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dlarepro.bench import StepSetup
from dlarepro.benchprofile import FUSED_FAMILY, VECTOR_FAMILY
from dlarepro.benchtraffic import TrafficCount, step_traffic, traffic_table
from dlarepro.models import native_tails
from dlarepro.models import tail_kernels as k
from dlarepro.models.native_base import native_join_forward

ELEMENTWISE = "element-wise + reductions, op by op"


def test_each_op_reads_its_distinct_inputs_and_writes_its_outputs():
    x = torch.ones(1000)  # 4000 bytes
    with TrafficCount() as count:
        y = x + x  # x read once, y written
        y.relu_()  # read and written in place
        y.view(10, 100)  # a view moves nothing
    assert count.bytes[ELEMENTWISE] == 2 * 4000 + 2 * 4000
    assert count.calls[ELEMENTWISE] == 2


def test_batch_norm_reads_its_input_twice():
    x = torch.randn(2, 3, 4, 4)
    with TrafficCount() as count:
        F.batch_norm(x, None, None, training=True)
    moved, calls = count.bytes["batch norm fwd + bwd"], count.calls["batch norm fwd + bwd"]
    assert calls == 1
    assert moved >= 2 * x.nbytes + x.nbytes  # input twice, output once (plus its small statistics)
    assert moved < 4 * x.nbytes


def test_a_fused_kernel_is_one_operator_and_its_statistics_inputs_count_twice():
    maps = {name: torch.randn(2, 4, 3, 3) for name in ("y", "s", "v")}
    w, alpha = torch.rand(2, 4, 1, 1), torch.rand(2, 4, 1, 1)
    gamma, beta = torch.rand(4), torch.rand(4)
    with TrafficCount() as count:
        out, mean, var, rstd = k.LIGHT_TRAIN("eager", maps["y"], maps["s"], maps["v"], None, w, alpha, gamma, beta,
                                             None, 1e-5)
    assert k.Kernel.observer is None, "the observer is removed on exit"
    small = sum(t.nbytes for t in (w, alpha, gamma, beta, mean, var, rstd))
    # y once, s and v twice (statistics, then the output), the output map once
    assert count.bytes[FUSED_FAMILY] == 3 * 72 * 4 + 2 * 72 * 4 + out.nbytes + small
    assert count.calls == {FUSED_FAMILY: 1}, "the kernel's own ops are not counted one by one"


def test_the_fused_tails_move_fewer_bytes_than_the_reference_in_a_real_step():
    fused = step_traffic(StepSetup("dla_l", 11, batch=2, tails="eager"))
    reference = step_traffic(StepSetup("dla_l", 11, batch=2, tails="reference"))
    assert fused[FUSED_FAMILY][1] > 0 and reference[FUSED_FAMILY] == (0.0, 0.0)
    assert fused["convolution fwd + bwd"] == reference["convolution fwd + bwd"]
    total = lambda t: sum(b for b, _ in t.values())
    assert total(fused) < 0.9 * total(reference)
    rows = {row[0]: row[1:] for row in traffic_table({"none-11": fused, "dla_l-11": reference}, "none-11")}
    assert rows["x none-11"][0] == "1.00"
    assert float(rows["x none-11"][1]) > 1.1


@pytest.mark.parametrize("tails, column", [(None, "fused"), ("native", "native")])
def test_the_benchmark_prints_the_traffic_of_each_model_beside_the_resnet(tails, column):
    import subprocess
    import sys

    from conftest import ENV, REPO

    done = subprocess.run([sys.executable, str(REPO / "bench" / "step_time.py"), "--traffic", "--depths", "11",
                           "--batch", "2", "--archs", "se", "mrla_l", *(["--tails", tails] if tails else [])],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if line.startswith("family"))
    # a method without tails has one column, a layer-attention method its fused (or native) and reference tails
    assert header.split()[1:] == ["none-11", "se-11", "mrla_l-11", column, "mrla_l-11", "reference"]
    ratios = next(line for line in done.stdout.splitlines() if line.startswith("x none-11")).split()[2:]
    assert ratios[0] == "1.00" and float(ratios[2]) < float(ratios[3])  # fused below reference


def test_a_kernel_reading_a_list_of_maps_counts_every_map():
    values = [torch.randn(2, 4, 3, 3) for _ in range(3)]
    coeffs = [torch.rand(2, 4, 1, 1) for _ in range(3)]
    with TrafficCount() as count:
        out = k.WEIGHTED_SUM("eager", None, values, coeffs)
    assert count.bytes[FUSED_FAMILY] == 3 * 72 * 4 + 3 * 8 * 4 + out.nbytes


def channels_last_maps(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).contiguous(memory_format=torch.channels_last)


def test_a_native_kernel_call_counts_each_map_once_per_pass_it_streams():
    branch, shortcut = channels_last_maps(2, 16, 3, 3), channels_last_maps(2, 16, 3, 3)
    with TrafficCount() as count:
        y, _, _ = native_join_forward(branch, shortcut, False)  # one pass: branch and s read, y written
    assert native_tails.traffic_observer is None, "the observer is removed on exit"
    assert count.bytes[FUSED_FAMILY] == 3 * branch.nbytes
    assert count.calls[FUSED_FAMILY] == 1


def test_the_native_tails_are_counted_in_a_real_step():
    eager = step_traffic(StepSetup("dla_b", 11, batch=2, tails="eager"))
    native = step_traffic(StepSetup("dla_b", 11, batch=2, tails="native"))
    assert native[FUSED_FAMILY][1] > 0
    assert native[VECTOR_FAMILY][0] > 0, "the native queries, keys and DSU gates report what they move"
    # the native B tails compute the value convolution inside their passes: fewer library convolutions
    assert native["convolution fwd + bwd"][1] < eager["convolution fwd + bwd"][1]
    total = lambda t: sum(b for b, _ in t.values())
    assert total(native) < total(eager)
