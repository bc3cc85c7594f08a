"""The tails mode ``native``: MRLA-L's and DLA-L's light tails with their depthwise convolutions
inside one C++ kernel (``models.tails.StencilLightTail``), MRLA-B's and DLA-B's base tails and
value gradients in C++ (``models.tails.BaseTail``, flavour ``native``); ``dlarepro.native``."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from conftest import ENV, REPO
from dlarepro import native
from dlarepro.benchstencil import BaseStage, Case, base_stage_difference, make_norm, max_relative_difference
from dlarepro.models import tails
from test_tails import LAYER_ATTENTION, assert_same, twin_models

CL = torch.channels_last


@pytest.fixture
def native_calls(monkeypatch):
    """The maps every native forward ran on (light tails: ``y``; base tails: the newest value map),
    and the value gradients the native weighted sum gave (``("sum", shape)``)."""
    calls = []
    light_forward, base_forward, value_gradient = tails.StencilLightTail.forward, tails.native_base_forward, \
        tails.native_value_gradient

    def light(ctx, *args):
        calls.append(args[0].shape)
        return light_forward(ctx, *args)

    def base(y, coeffs, gamma, beta, norm, mask, values, pool_newest, taps=None):
        calls.append(y.shape)
        return base_forward(y, coeffs, gamma, beta, norm, mask, values, pool_newest, taps)

    def summed(maps, coeffs, extra, y, taps, grad_y):
        calls.append(("sum", maps[0].shape))
        return value_gradient(maps, coeffs, extra, y, taps, grad_y)

    monkeypatch.setattr(tails.StencilLightTail, "forward", staticmethod(light))
    monkeypatch.setattr(tails, "native_base_forward", base)
    monkeypatch.setattr(tails, "native_value_gradient", summed)
    return calls


@pytest.mark.parametrize("arch,knobs", LAYER_ATTENTION, ids=lambda v: v if isinstance(v, str) else
                         "-".join(map(str, v.values())))
def test_native_tails_equal_the_reference_in_float64(arch, knobs, native_calls):
    """Every method, both DSU behaviours, train and eval, drop-path 0.3, channels-last: outputs, input
    and parameter gradients and BN running statistics as the reference's; every block ran its native
    forward, and (B methods) every value map got its gradient from the native weighted sum."""
    reference, fused = twin_models(arch, knobs, "native", memory_format=CL)
    x = torch.randn(4, 3, 32, 32, dtype=torch.double).contiguous(memory_format=CL)
    assert_same(reference, fused, x, tol={"rtol": 1e-9, "atol": 1e-11})
    blocks = 9  # depth 29: three stages of three blocks, once in train and once in eval
    forwards = [c for c in native_calls if c[0] != "sum"]
    assert len(forwards) == 2 * blocks
    assert len(native_calls) - len(forwards) == (0 if arch.endswith("_l") else 2 * blocks)


def test_float32_matches_the_compiled_tails_at_a_stage_shape():
    """The benchmark's check, float32, with an image dropped: output, every gradient (both taps'
    included) and running statistics of the native kernel against the library's convolutions and the
    compiled tail."""
    for refresh in (False, True):
        case = Case.make((3, 32, 6, 5), refresh, drop=True)
        assert case.mask.flatten()[0] == 0
        assert max_relative_difference(case) < 1e-5


def test_a_stage_of_base_tails_matches_the_library_path_in_float64():
    """The benchmark's check of MRLA-B / DLA-B: a stage of three blocks, an image dropped, DLA-B's
    value maps pooled: every output, gradient (the value convolutions' weights included) and
    running statistic of the native path against the library's convolutions and the eager tails."""
    for pooled in (False, True):
        stage = BaseStage.make((3, 32, 6, 5), 3, pooled, dtype=torch.float64)
        assert stage.mask.flatten()[0] == 0
        assert base_stage_difference(stage, flavour="eager") < 1e-12


def test_a_stage_of_base_tails_in_float32_follows_float64():
    """float32 maps: the native stage within float32 rounding of the float64 library path."""
    ours, ref = BaseStage.make((3, 32, 6, 5), 3, True), BaseStage.make((3, 32, 6, 5), 3, True, dtype=torch.float64)
    norms = lambda dtype: [make_norm(32, seed=i).to(dtype) for i in range(3)]
    for a, b in zip(ours.run(True, norms(torch.float32)), ref.run(False, norms(torch.float64), "eager")):
        assert a.dtype == torch.float32
        assert ((a.double() - b).abs().max() / b.abs().max()).item() < 1e-5


def test_a_value_map_differentiated_directly_gets_that_gradient_too():
    """Later blocks hand a value map's gradient to the stage's ``ValueGradients``; a loss on the
    map itself (autograd's own route) reaches the convolution's weight and ``y`` as well."""
    stage = BaseStage.make((2, 16, 5, 4), 2, False, dtype=torch.float64)
    extra = torch.randn(2, 16, 5, 4, dtype=torch.float64)
    got = []
    for native_path in (True, False):
        y, weight = stage.ys[0], stage.weights[0]
        y.grad = weight.grad = None
        norm = make_norm(16).double()
        coeffs = stage.coeffs[0][..., None, None]
        if native_path:
            out, value = tails.StencilBaseTail.apply(y, weight, coeffs, norm.weight, norm.bias, norm, None,
                                                     tails.ValueGradients(), False)
        else:
            value = torch.nn.functional.conv2d(y, weight, padding=1, groups=16)
            out = tails.BaseTail.apply(y, coeffs, norm.weight, norm.bias, norm, None, "eager", tails.ValueGradients(),
                                       False, value)
        ((out * stage.grads[0]).sum() + (value * extra).sum()).backward()
        got.append((y.grad.clone(), weight.grad.clone()))
    for a, b in zip(*got):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("arch", ["dla_l", "dla_b"])
def test_maps_the_kernel_cannot_take_use_the_compiled_tails(arch, native_calls):
    """NCHW maps, channels not a multiple of 16 or 16-bit maps: the same model, the compiled tails."""
    reference, fused = twin_models(arch, {}, "native", depth=20)
    x = torch.randn(2, 3, 32, 32, dtype=torch.double)  # NCHW
    assert_same(reference, fused, x, tol={"rtol": 1e-9, "atol": 1e-11})
    assert native_calls == []
    y = torch.randn(2, 24, 4, 4).contiguous(memory_format=CL)
    assert not tails.native_applies(y, y)
    y = torch.randn(2, 32, 4, 4, dtype=torch.bfloat16).contiguous(memory_format=CL)
    assert not tails.native_applies(y, y)
    y = torch.randn(2, 32, 4, 4).contiguous(memory_format=CL)
    assert tails.native_applies(y, y)


def test_without_a_compiler_the_build_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(native.BuildError, match="no C\\+\\+ compiler 'no-such-compiler' on PATH"):
        native.build(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arch", ["mrla_l", "mrla_b"])
def test_a_failed_build_leaves_the_compiled_tails_running(arch, monkeypatch, caplog, native_calls):
    def fails(cache=None):
        raise native.BuildError("g++ failed on stencil_tail.cpp:\nerror: ...")

    monkeypatch.setattr(native, "build", fails)
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(tails, "native_failed", False)
    reference, fused = twin_models(arch, {}, "native", depth=20, memory_format=CL)
    x = torch.randn(2, 3, 32, 32, dtype=torch.double).contiguous(memory_format=CL)
    with caplog.at_level(logging.WARNING):
        assert_same(reference, fused, x, tol={"rtol": 1e-9, "atol": 1e-11})
    assert "the native tails are not available (g++ failed on stencil_tail.cpp:); running the compiled ones" \
        in caplog.text
    assert caplog.text.count("not available") == 1 and native_calls == []


def test_a_build_is_reused_and_written_atomically(tmp_path):
    first = native.build(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert native.build(tmp_path) == first and first.stat().st_mtime_ns == stamp  # not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left beside it


def test_the_benchmark_prints_both_paths_and_their_difference():
    done = subprocess.run([sys.executable, str(REPO / "bench/step_time.py"), "--stencil-tails", "--depths", "11",
                           "--batch", "2", "--rounds", "1", "--tails", "eager"], capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith(("mrla_l ", "dla_l "))]
    assert [(r[0], r[1]) for r in rows] == [(m, s) for s in ("64x32x32", "128x16x16", "256x8x8")
                                            for m in ("mrla_l", "dla_l")]
    assert all(float(r[-1]) < 1e-5 for r in rows), rows  # the check ran and passed
    assert "mrla_l-11:" in done.stdout and "dla_l-11:" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith(("mrla_b ", "dla_b "))]
    assert [(r[0], r[1]) for r in rows] == [(m, s) for s in ("64x32x32", "128x16x16", "256x8x8")
                                            for m in ("mrla_b", "dla_b")]
    assert all(float(r[-1]) < 1e-12 for r in rows), rows  # float64
    assert "mrla_b-11:" in done.stdout and "dla_b-11:" in done.stdout
