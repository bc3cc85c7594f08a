"""The tails mode ``native`` (``models.native_tails``, ``native_base``, ``native_vectors``, built by
``dlarepro.native``): MRLA-L's and DLA-L's light blocks from branch and shortcut, their join and
depthwise convolutions inside (``LightJoin``, ``LightTail``), MRLA-B's and DLA-B's join and base
tails with their value convolutions inside (``BaseJoin``, ``StencilBaseTail``), the per-block
vector work (``LightHead``, ``ChannelConv``) and the DSU cell's gates (``DSUGates``), all in C++."""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
from collections import Counter

import pytest
import torch

from conftest import ENV, REPO
from dlarepro import native
from dlarepro.benchstencil import (BaseStage, Case, base_stage_difference, library_tail, make_norm,
                                   max_relative_difference, stencil_tail)
from dlarepro.models import build_model, native_base, native_tails, native_vectors, tail_kernels, tails
from dlarepro.models.parts import DropPath
from test_tails import LAYER_ATTENTION, assert_same, twin_models

CL = torch.channels_last


@pytest.fixture
def native_calls(monkeypatch):
    """How often each native kernel ran: the light blocks' ``light_join``, ``light`` (the tail's
    forward) and ``light_backward`` (the join's backward: the maps' pass); the base tails' ``base``
    forward, ``value_gradient`` (a B map's gradient through its convolution), ``join`` and
    ``join_backward``; the vector kernels' ``head`` (the light methods' attention weights),
    ``channel_conv`` (the B methods' queries and keys) and ``dsu_gates`` (a DSU cell call)."""
    calls = Counter()

    def counted(owner, name, kind):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            calls[kind] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, staticmethod(wrapper) if isinstance(owner, type) else wrapper)

    for owner, name, kind in ((native_tails.LightJoin, "forward", "light_join"),
                              (native_tails.LightTail, "forward", "light"),
                              (native_tails.LightJoin, "backward", "light_backward"),
                              (native_vectors.LightHead, "forward", "head"),
                              (native_vectors.ChannelConv, "forward", "channel_conv"),
                              (native_vectors.DSUGates, "forward", "dsu_gates")):
        counted(owner, name, kind)
    for name, kind in (("native_base_forward", "base"), ("native_value_gradient", "value_gradient"),
                       ("native_join_forward", "join"), ("native_join_backward", "join_backward")):
        counted(native_base, name, kind)
    return calls


@pytest.mark.parametrize("arch,knobs", LAYER_ATTENTION + [("dla_b", {"sigma": "relu"}), ("dla_l", {"cell": "lstm"})],
                         ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())))
def test_native_tails_equal_the_reference_in_float64(arch, knobs, native_calls):
    """Every method, both DSU behaviours, another σ and another cell, train and eval, drop-path 0.3,
    channels-last: outputs, input and parameter gradients and BN running statistics as the
    reference's; every block ran the native join and tail forward and backward, every DSU call its
    native gates."""
    reference, fused = twin_models(arch, knobs, "native", memory_format=CL)
    x = torch.randn(4, 3, 32, 32, dtype=torch.double).contiguous(memory_format=CL)
    assert_same(reference, fused, x, tol={"rtol": 1e-9, "atol": 1e-11})
    runs = 2 * 9  # depth 29: three stages of three blocks, once in train and once in eval
    dsu = arch.startswith("dla") and knobs.get("cell", "dsu") == "dsu"
    if arch.endswith("_l"):
        expected = {"light_join": runs, "light": runs, "light_backward": runs, "head": runs}
        cell_calls = 2 * runs  # the forward path's and the refresh's
    else:
        # the join's backward is the value gradient's pass (BaseJoin)
        expected = {"base": runs, "join": runs, "value_gradient": runs, "channel_conv": 2 * runs}
        cell_calls = runs + runs * 2 // 3  # every block's context, and the refresh from a stage's second block
    assert native_calls == expected | ({"dsu_gates": cell_calls} if dsu else {})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels,kernel,heads", [(64, 3, 2), (256, 5, 8), (32, 1, 1), (7, 3, 7)])
def test_native_vectors_equal_the_torch_path(dtype, channels, kernel, heads):
    """The light head's weights and the channel convolution, values and every gradient, as the torch
    operators compute them (float64: to rounding; float32: within float32 rounding of sums of a few
    hundred terms); the written-out backward passes gradcheck."""
    from dlarepro.models.parts import channel_conv, head_scores, per_channel

    torch.manual_seed(channels + kernel)
    pooled = torch.randn(6, channels, dtype=dtype, requires_grad=True)
    wq, wk = (torch.randn(1, 1, kernel, dtype=dtype, requires_grad=True) for _ in range(2))
    grad = torch.randn(6, channels, dtype=dtype)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 2e-5}
    torch_head = per_channel(torch.sigmoid(head_scores(channel_conv(pooled, wq), channel_conv(pooled, wk), heads)),
                             channels)
    for expected, got, inputs in ((torch_head, native_vectors.light_head(pooled, wq, wk, heads), (pooled, wq, wk)),
                                  (channel_conv(pooled, wq), native_vectors.channel_conv(pooled, wq), (pooled, wq))):
        torch.testing.assert_close(got, expected, **tol)
        for a, b in zip(torch.autograd.grad(got, inputs, grad), torch.autograd.grad(expected, inputs, grad)):
            torch.testing.assert_close(a, b, **tol)
    if dtype == torch.float64:
        small = pooled[:2].detach().requires_grad_()
        assert torch.autograd.gradcheck(lambda p, q, k: native_vectors.light_head(p, q, k, heads), (small, wq, wk))
        assert torch.autograd.gradcheck(native_vectors.channel_conv, (small, wq))


@pytest.mark.parametrize("sigma", ["sigmoid", "identity", "tanh", "relu"])
@pytest.mark.parametrize("tokens,state_rows", [((), 5), ((4,), 5), ((4,), 1), ((3, 2), 1)])
def test_the_native_dsu_gates_equal_the_torch_cell(sigma, tokens, state_rows):
    """A DSU call with its gates in C++: ``h'``, ``c'`` and the gradients of the input, the state and
    every parameter as the torch cell's (float64 to rounding, float32 within a few ulp: the float32
    kernel has its own exp and tanh), with tokens before the batch (DLA-B's refresh) and a state of one
    row for every image (the official refresh); ``c'`` dropped takes the other backward; gradcheck."""
    from dlarepro.models.cells import DSUCell

    for dtype, tol in ((torch.float64, {"rtol": 1e-12, "atol": 1e-13}), (torch.float32, {"rtol": 1e-5, "atol": 3e-6})):
        torch.manual_seed(len(tokens) + state_rows)
        cell = DSUCell(32, sigma=sigma).to(dtype)
        x = torch.randn(*tokens, 5, 32, dtype=dtype, requires_grad=True)
        state = tuple(torch.randn(state_rows, 32, dtype=dtype).requires_grad_() for _ in range(2))
        inputs = [x, *state, *cell.parameters()]
        for keep_c in (True, False):
            results = []
            for in_cpp in (False, True):
                torch.manual_seed(1)
                h, (_, c) = native_vectors.cell_step(cell, x, state, in_cpp)
                assert (type(h.grad_fn).__name__ == "DSUGatesBackward") == in_cpp
                loss = (h * torch.randn_like(h)).sum() + (c * torch.randn_like(c)).sum() * keep_c
                results.append([h, c, *torch.autograd.grad(loss, inputs)])
            for expected, got in zip(*results):
                torch.testing.assert_close(got, expected, **tol)
    a, b, c = (torch.randn(*shape, dtype=torch.double, requires_grad=True) for shape in ((2, 3, 48), (3, 48), (3, 16)))
    code = native_vectors.SIGMA_CODES[sigma]
    assert torch.autograd.gradcheck(lambda a, b, c: native_vectors.DSUGates.apply(a, b, c, code), (a, b, c))


def test_native_vectors_refuse_bad_shapes():
    """An even kernel or heads that do not divide the channels: a clear error, not wrong numbers."""
    pooled = torch.randn(2, 64)
    with pytest.raises(ValueError, match="odd kernel size, got 4"):
        native_vectors.channel_conv(pooled, torch.zeros(1, 1, 4))
    with pytest.raises(ValueError, match="light head: 64 channels do not split into 5 heads"):
        native_vectors.light_head(pooled, torch.zeros(1, 1, 3), torch.zeros(1, 1, 3), 5)
    assert not native_vectors.vectors_apply(pooled.half())
    with pytest.raises(ValueError, match=r"DSU gates: shapes \(3, 2, 96\), \(2, 96\), \(2, 31\) do not fit"):
        native_vectors.DSUGates.apply(torch.zeros(3, 2, 96), torch.zeros(2, 96), torch.zeros(2, 31), 0)


def test_float32_matches_the_compiled_tails_at_a_stage_shape():
    """The benchmark's check, float32, with an image dropped: output, pools, every gradient (both taps'
    included) and running statistics of the native block against the compiled join, the library's
    convolutions and the compiled tail."""
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


@pytest.mark.parametrize("shape", [(2, 16, 1, 3), (2, 16, 3, 1), (1, 48, 2, 2)])
def test_edge_shapes_match_the_library_path(shape):
    """Maps one pixel high or wide (every stencil tap but the centre row or column falls outside),
    one image, three channel blocks: the base stage and both light tails."""
    for pooled in (False, True):
        assert base_stage_difference(BaseStage.make(shape, 2, pooled, dtype=torch.float64), flavour="eager") < 1e-12
    for refresh in (False, True):
        case = Case.make(shape, refresh, drop=False)
        assert max_relative_difference(case, functools.partial(library_tail, flavour="eager")) < 1e-5


def test_a_light_block_in_float64_matches_the_library_path():
    """Both light blocks in float64, in training with an image dropped and in eval (running
    statistics; no batch moments from the join; drop-path off): outputs, pools and every gradient
    against the eager join, the library's convolutions and the eager tail."""
    for refresh in (False, True):
        case = Case.make((3, 32, 6, 5), refresh, dtype=torch.float64)
        assert max_relative_difference(case, functools.partial(library_tail, flavour="eager")) < 1e-12
        case = Case.make((3, 32, 6, 5), refresh, drop=False, dtype=torch.float64)
        norms = [make_norm(32).double().eval() for _ in range(2)]
        ours = case.run(stencil_tail, norms[0])
        ref = case.run(functools.partial(library_tail, flavour="eager"), norms[1])
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_light_block_differentiated_through_its_pools_only():
    """The output unused, the tail's backward never runs: the join's backward still gives the
    gradients of the pools to the branch and the shortcut, and nothing to the convolutions."""
    for refresh in (False, True):
        case = Case.make((2, 16, 5, 4), refresh, dtype=torch.float64)
        got = []
        for path in (stencil_tail, functools.partial(library_tail, flavour="eager")):
            t = case.leaves
            for leaf in t.values():
                leaf.grad = None
            outputs = path(t["branch"], t["s"], t["value"], t.get("refresh"), t["w"], t["alpha"],
                           make_norm(16).double(), case.mask)
            torch.autograd.backward(outputs[1:], case.grads[1:])
            got.append([t["branch"].grad, t["s"].grad])
            assert all(t[n].grad is None or not t[n].grad.any() for n in ("value", "refresh") if n in t)
        for a, b in zip(*got):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        assert got[0][0].abs().sum() > 0


def test_a_joined_map_changed_in_place_is_caught_at_backward():
    """The light block keeps the branch, not y: changing the branch in place between forward and
    backward would silently give wrong gradients, so autograd's version check raises instead."""
    case = Case.make((2, 16, 5, 4), True, dtype=torch.float64)
    t = case.leaves
    branch = t["branch"] * 1.0
    outputs = stencil_tail(branch, t["s"], t["value"], t["refresh"], t["w"], t["alpha"], make_norm(16).double(),
                           None)
    branch.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.backward(outputs, case.grads)


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
            out, value = native_base.StencilBaseTail.apply(y, weight, coeffs, norm.weight, norm.bias, norm, None,
                                                     tails.ValueGradients(), False, None)
        else:
            value = torch.nn.functional.conv2d(y, weight, padding=1, groups=16)
            out = tails.BaseTail.apply(y, coeffs, norm.weight, norm.bias, norm, None, "eager", tails.ValueGradients(),
                                       False, value)
        ((out * stage.grads[0]).sum() + (value * extra).sum()).backward()
        got.append((y.grad.clone(), weight.grad.clone()))
    for a, b in zip(*got):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_base_join_backward_makes_the_value_maps_pass():
    """The B block's join (``BaseJoin``) takes ``V_t``'s gradient through the value convolution and the
    ReLU in its backward: with the tail, ``y`` also read elsewhere and the value map differentiated
    directly; and with the pools alone differentiated (the tail's backward never runs). Branch,
    shortcut, weight and BN gradients as the op-by-op path's, float64."""
    gen = torch.Generator().manual_seed(3)
    shape = (2, 16, 5, 4)
    make = lambda: torch.randn(shape, generator=gen, dtype=torch.float64).contiguous(memory_format=CL)
    branch, shortcut, g_out, g_y, g_value = (make() for _ in range(5))
    g_pooled = torch.randn(2, 16, generator=gen, dtype=torch.float64)
    weight0 = torch.randn(16, 1, 3, 3, generator=gen, dtype=torch.float64)
    for with_tail in (True, False):
        got = []
        for native_path in (True, False):
            b, s, weight = (t.clone().requires_grad_() for t in (branch, shortcut, weight0))
            norm = make_norm(16).double()
            if native_path:
                block, y, pooled = native_base.base_join(b, s, weight)
            else:
                y = torch.relu(b + s)
                pooled = y.sum((2, 3)) / 20
            loss = (pooled * g_pooled).sum()
            if with_tail:
                coeffs = torch.sigmoid(pooled)[None]  # the pools reach the tail, as through the keys
                if native_path:
                    out, value = native_base.stencil_base_tail(y, weight, [], coeffs, norm, DropPath(0.0),
                                                                tails.ValueGradients(), False, block)
                else:
                    value = torch.nn.functional.conv2d(y, weight, padding=1, groups=16)
                    out = y + torch.relu(norm(value * coeffs[0][..., None, None]))
                loss = loss + (out * g_out).sum() + (y * g_y).sum() + (value * g_value).sum()
            loss.backward()
            got.append([b.grad, s.grad, weight.grad, norm.weight.grad, norm.bias.grad])
        for a, b in zip(*got):
            if b is None:  # pools only: no gradient reaches the convolution or the norm
                assert a is None or not a.any()
            else:
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        assert got[0][0].abs().sum() > 0


@pytest.mark.parametrize("arch", ["dla_l", "dla_b"])
def test_maps_the_kernel_cannot_take_use_the_compiled_tails(arch, native_calls):
    """NCHW maps, channels not a multiple of 16 or 16-bit maps: the same model, the compiled tails."""
    reference, fused = twin_models(arch, {}, "native", depth=20)
    x = torch.randn(2, 3, 32, 32, dtype=torch.double)  # NCHW
    assert_same(reference, fused, x, tol={"rtol": 1e-9, "atol": 1e-11})
    assert not native_calls
    y = torch.randn(2, 24, 4, 4).contiguous(memory_format=CL)
    assert not native_tails.native_applies(y, y)
    y = torch.randn(2, 32, 4, 4, dtype=torch.bfloat16).contiguous(memory_format=CL)
    assert not native_tails.native_applies(y, y)
    y = torch.randn(2, 32, 4, 4).contiguous(memory_format=CL)
    assert native_tails.native_applies(y, y)


def test_without_a_compiler_the_build_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(native.BuildError, match="no C\\+\\+ compiler 'no-such-compiler' on PATH"):
        native.build(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arch", ["mrla_l", "mrla_b"])
def test_a_failed_build_leaves_the_compiled_tails_running(arch, monkeypatch, caplog, native_calls):
    def fails(cache=None):
        raise native.BuildError("g++ failed on light_block.cpp:\nerror: ...")

    monkeypatch.setattr(native, "build", fails)
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native_tails, "native_failed", False)
    reference, fused = twin_models(arch, {}, "native", depth=20, memory_format=CL)
    x = torch.randn(2, 3, 32, 32, dtype=torch.double).contiguous(memory_format=CL)
    with caplog.at_level(logging.WARNING):
        assert_same(reference, fused, x, tol={"rtol": 1e-9, "atol": 1e-11})
    assert "the native tails are not available (g++ failed on light_block.cpp:); running the compiled ones" \
        in caplog.text
    assert caplog.text.count("not available") == 1 and not native_calls


def test_a_build_is_reused_and_written_atomically(tmp_path):
    first = native.build(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert native.build(tmp_path) == first and first.stat().st_mtime_ns == stamp  # not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left beside it


def test_another_kind_of_cpu_gets_its_own_build(tmp_path, monkeypatch):
    """``-march=native``: a cache shared by a cluster's nodes (a home directory) keeps one library
    per kind of CPU, never loading one node's instructions on another."""
    assert "flags=" in native.cpu_identity() or "Features=" in native.cpu_identity()
    first = native.build(tmp_path)
    monkeypatch.setattr(native, "cpu_identity", lambda: "x86_64\0model name=another CPU\0flags=sse2")
    second = native.build(tmp_path)
    assert second != first and sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name])


def test_the_benchmark_prints_both_paths_and_their_difference():
    done = subprocess.run([sys.executable, str(REPO / "bench/step_time.py"), "--stencil-tails", "--depths", "11",
                           "--batch", "2", "--rounds", "1", "--tails", "eager"], capture_output=True, text=True, env=ENV,
                          timeout=600)
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


@pytest.mark.parametrize("arch", ["mrla_l", "dla_l", "mrla_b", "dla_b"])
def test_auto_on_the_cpu_runs_native_and_compiles_nothing(arch, native_calls, monkeypatch):
    """The default mode on the CPU with channels-last float maps: every block native, no kernel
    handed to torch.compile (a training process starts at once)."""
    monkeypatch.delenv(tails.ENV_VAR, raising=False)
    monkeypatch.setattr(tail_kernels.Kernel, "__call__", lambda self, *args: pytest.fail(f"{self.fn.__name__} ran"))
    model = build_model(arch, 20, "cifar10", drop_path=0.1).to(memory_format=CL)
    model(torch.randn(2, 3, 32, 32).contiguous(memory_format=CL)).sum().backward()
    joins = ("light_join", "light_backward") if arch.endswith("_l") else ("join", "value_gradient")
    assert [native_calls[kind] for kind in joins] == [6, 6]  # depth 20: 3 stages of 2 blocks


def test_the_kernels_do_not_depend_on_the_thread_count():
    """Every sum runs in a fixed order whatever the threads: a stage of base tails, both light
    tails, the join and the DSU gates give bit-identical results on 1 and 2 threads. (The library's
    convolutions do not promise this: a whole model's step differs in the last bits between thread
    counts.)"""
    threads = torch.get_num_threads()
    stage = BaseStage.make((4, 32, 6, 5), 3, pooled=True)
    maps = [torch.randn(4, 32, 6, 5).contiguous(memory_format=CL) for _ in range(4)]
    vectors = [torch.randn(4, 32) for _ in range(2)]
    # DSU gates large enough to run on both threads: tokens 4, batch 8, 512 channels
    gates = [torch.randn(*shape, requires_grad=True) for shape in ((4, 8, 1536), (8, 1536), (8, 512))]
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            got = stage.run(True, [make_norm(32, seed=i) for i in range(3)])
            for refresh in (False, True):
                got += Case.make((4, 32, 6, 5), refresh).run(stencil_tail, make_norm(32))
            got += [t for t in native_base.native_join_forward(maps[0], maps[1], True)]
            got += list(native_base.native_join_backward(maps[2], maps[0].relu(), *vectors, maps[3], (maps[1],)))
            h, c = native_vectors.DSUGates.apply(*gates, 0)
            got += [h, c, *torch.autograd.grad(h.sum() + (c * c).sum(), gates)]
            results.append(got)
    finally:
        torch.set_num_threads(threads)
    assert len(results[0]) > 40 and all(torch.equal(a, b) for a, b in zip(*results))
