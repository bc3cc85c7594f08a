"""The tails mode ``native``: MRLA-L's and DLA-L's light tails with their depthwise convolutions
inside one C++ kernel (``models.tails.StencilLightTail``, ``dlarepro.native``)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from conftest import ENV, REPO
from dlarepro import native
from dlarepro.benchstencil import Case, max_relative_difference
from dlarepro.models import tails
from test_tails import LAYER_ATTENTION, assert_same, twin_models

CL = torch.channels_last


@pytest.fixture
def native_calls(monkeypatch):
    """How often the native kernel ran (forward calls)."""
    calls = []
    forward = tails.StencilLightTail.forward

    def counted(ctx, *args):
        calls.append(args[0].shape)
        return forward(ctx, *args)

    monkeypatch.setattr(tails.StencilLightTail, "forward", staticmethod(counted))
    return calls


@pytest.mark.parametrize("arch,knobs", LAYER_ATTENTION, ids=lambda v: v if isinstance(v, str) else
                         "-".join(map(str, v.values())))
def test_native_tails_equal_the_reference_in_float64(arch, knobs, native_calls):
    """Every method, both DSU behaviours, train and eval, drop-path 0.3, channels-last: outputs, input
    and parameter gradients and BN running statistics as the reference's; the light methods' every
    block ran the native kernel (the B methods have no light tail: their compiled tails run)."""
    reference, fused = twin_models(arch, knobs, "native", memory_format=CL)
    x = torch.randn(4, 3, 32, 32, dtype=torch.double).contiguous(memory_format=CL)
    assert_same(reference, fused, x, tol={"rtol": 1e-9, "atol": 1e-11})
    blocks = 9  # depth 29: three stages of three blocks, once in train and once in eval
    assert len(native_calls) == (2 * blocks if arch.endswith("_l") else 0)


def test_float32_matches_the_compiled_tails_at_a_stage_shape():
    """The benchmark's check, float32, with an image dropped: output, every gradient (both taps'
    included) and running statistics of the native kernel against the library's convolutions and the
    compiled tail."""
    for refresh in (False, True):
        case = Case.make((3, 32, 6, 5), refresh, drop=True)
        assert case.mask.flatten()[0] == 0
        assert max_relative_difference(case) < 1e-5


def test_maps_the_kernel_cannot_take_use_the_compiled_tails(native_calls):
    """NCHW maps, channels not a multiple of 16 or 16-bit maps: the same model, the compiled tails."""
    reference, fused = twin_models("dla_l", {}, "native", depth=20)
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


def test_a_failed_build_leaves_the_compiled_tails_running(monkeypatch, caplog, native_calls):
    def fails(cache=None):
        raise native.BuildError("g++ failed on stencil_tail.cpp:\nerror: ...")

    monkeypatch.setattr(native, "build", fails)
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(tails, "native_failed", False)
    reference, fused = twin_models("mrla_l", {}, "native", depth=20, memory_format=CL)
    x = torch.randn(2, 3, 32, 32, dtype=torch.double).contiguous(memory_format=CL)
    with caplog.at_level(logging.WARNING):
        assert_same(reference, fused, x, tol={"rtol": 1e-9, "atol": 1e-11})
    assert "the native light tails are not available (g++ failed on stencil_tail.cpp:); running the compiled ones" \
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
