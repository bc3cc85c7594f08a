"""The fused layer-attention tails equal the reference modules: outputs, every gradient, BN state."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from dlarepro.models import build_model
from dlarepro.models import tail_kernels
from dlarepro.models.tails import ENV_VAR, default_mode, flavour, set_tails

LAYER_ATTENTION = [("mrla_l", {}), ("mrla_b", {})] + [
    (arch, {"dsu_state": state}) for arch in ("dla_l", "dla_b") for state in ("per_image", "first_image")]


def twin_models(arch, knobs, mode, depth=29, dtype=torch.double, memory_format=torch.contiguous_format):
    """The same weights twice: one running the reference code, one the fused tails in ``mode``."""
    torch.manual_seed(0)
    reference = build_model(arch, depth, "cifar100", drop_path=0.3, **knobs).to(dtype=dtype,
                                                                                memory_format=memory_format)
    fused = copy.deepcopy(reference)
    return set_tails(reference, "reference"), set_tails(fused, mode)


def step(model, x, seed):
    """Forward and backward of a loss on the logits and on the input; the drop-path draws come from
    ``seed``. Returns the output, the input gradient and the random state after the forward."""
    x = x.clone().requires_grad_()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = model(x)
    after = torch.get_rng_state()
    (out.square().sum() + out[:, 0].sum()).backward()
    return out.detach(), x.grad, after


def assert_same(reference, fused, x, tol):
    for train in (True, False):
        reference.train(train)
        fused.train(train)
        out_r, grad_r, rng_r = step(reference, x, seed=7)
        out_f, grad_f, rng_f = step(fused, x, seed=7)
        where = "train" if train else "eval"
        assert torch.equal(rng_r, rng_f), f"{where}: the drop-path masks were drawn differently"
        torch.testing.assert_close(out_f, out_r, **tol, msg=f"{where}: outputs differ")
        torch.testing.assert_close(grad_f, grad_r, **tol, msg=f"{where}: input gradients differ")
        for (name, p_r), p_f in zip(reference.named_parameters(), fused.parameters()):
            torch.testing.assert_close(p_f.grad, p_r.grad, **tol, msg=f"{where}: gradient of {name} differs")
        for (name, b_r), b_f in zip(reference.named_buffers(), fused.buffers()):
            torch.testing.assert_close(b_f, b_r, **tol, msg=f"{where}: buffer {name} differs")


@pytest.mark.parametrize("arch,knobs", LAYER_ATTENTION, ids=lambda v: v if isinstance(v, str) else
                         "-".join(map(str, v.values())))
@pytest.mark.parametrize("mode", ["eager", "compiled"])
def test_fused_tails_equal_the_reference_in_float64(arch, knobs, mode):
    """Every method, both DSU behaviours, train and eval, drop-path 0.3: the fused path gives the
    reference's outputs, input and parameter gradients, and BN running statistics."""
    reference, fused = twin_models(arch, knobs, mode)
    x = torch.randn(4, 3, 32, 32, dtype=torch.double)
    assert_same(reference, fused, x, tol={"rtol": 1e-9, "atol": 1e-11})


def test_drop_path_really_drops_in_the_compared_step():
    """The equality above covers drop-path only if the seed drops a sample somewhere."""
    reference, _ = twin_models("dla_l", {}, "eager")
    reference.train()
    x = torch.randn(4, 3, 32, 32, dtype=torch.double)
    torch.manual_seed(7)
    with_drop = reference(x)
    for m in reference.modules():
        if hasattr(m, "drop_path"):
            m.drop_path.p = 0.0
    torch.manual_seed(7)
    assert not torch.allclose(reference(x), with_drop)


@pytest.mark.parametrize("arch", ["dla_l", "dla_b"])
def test_fused_tails_in_channels_last(arch):
    reference, fused = twin_models(arch, {}, "compiled", depth=20, memory_format=torch.channels_last)
    x = torch.randn(3, 3, 32, 32, dtype=torch.double).contiguous(memory_format=torch.channels_last)
    assert_same(reference, fused, x, tol={"rtol": 1e-9, "atol": 1e-11})


def test_bfloat16_maps_stay_bfloat16():
    """Under autocast the fused tails keep 16-bit maps 16-bit (the reference promotes them to float32
    at λ ⊙ s) and agree with the reference to bfloat16 precision."""
    reference, fused = twin_models("dla_l", {}, "eager", depth=20, dtype=torch.float32)
    reference.eval()
    fused.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_r, out_f = reference(x), fused(x)
        stage = fused.stages[0]
        branch, shortcut = stage.blocks[0](fused.stem(x))
        y, _ = stage.interaction(0, branch, shortcut, None)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(out_f.float(), out_r.float(), rtol=0.05, atol=0.05)


def test_modes_are_validated_with_the_bad_value_named(monkeypatch):
    model = build_model("mrla_l", 20, "cifar10")
    with pytest.raises(ValueError, match="unknown tails mode 'fast'"):
        set_tails(model, "fast")
    monkeypatch.setenv(ENV_VAR, "fused")
    with pytest.raises(ValueError, match=f"{ENV_VAR}='fused' is not one of"):
        default_mode()
    monkeypatch.setenv(ENV_VAR, "reference")
    assert flavour(None, torch.zeros(1), torch.nn.BatchNorm2d(4)) is None
    assert flavour("eager", torch.zeros(1), torch.nn.BatchNorm2d(4)) == "eager"
    assert flavour("eager", torch.zeros(1), torch.nn.BatchNorm2d(4, track_running_stats=False)) is None
    assert flavour("auto", torch.zeros(1), torch.nn.BatchNorm2d(4)) is None, "auto: the reference for what native cannot take"
    maps = torch.zeros(2, 32, 4, 4)
    assert flavour("auto", maps, torch.nn.BatchNorm2d(32)) is None, "NCHW on the CPU: the reference"
    assert flavour("auto", maps.contiguous(memory_format=torch.channels_last), torch.nn.BatchNorm2d(32)) == "native"


def test_a_kernel_whose_compilation_fails_runs_eagerly(monkeypatch, caplog):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler found\nmore detail")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(tail_kernels.Kernel, "failed", False)  # restored after the test
    kernel = tail_kernels.Kernel(tail_kernels.join_forward)
    branch, shortcut = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    with caplog.at_level(logging.WARNING):
        y, pooled, _ = kernel("compiled", branch, shortcut, False)
    assert "torch.compile failed for join_forward (no C++ compiler found); running it eagerly" in caplog.text
    torch.testing.assert_close(y, torch.relu(branch + shortcut))
    torch.testing.assert_close(pooled, y.mean((2, 3)))
    assert kernel.broken and tail_kernels.Kernel.failed


@pytest.mark.parametrize("flavour,counts", [("eager", range(1, 10)), ("compiled", [6])])
def test_weighted_sum_of_any_number_of_cached_maps(flavour, counts):
    """MRLA-B/DLA-B sum up to a stage's depth of value maps, SUM_CHUNK maps per pass."""
    torch.manual_seed(0)
    for t in counts:
        values = [torch.randn(2, 3, 4, 4, dtype=torch.double) for _ in range(t)]
        coeffs = torch.randn(t, 2, 3, 1, 1, dtype=torch.double)
        expected = sum(c * v for c, v in zip(coeffs, values))
        torch.testing.assert_close(tail_kernels.weighted_sum(flavour, values, coeffs), expected)


def test_weighted_sum_compiles_every_variant_of_a_deep_stage():
    """A ResNet-56 stage sums 1-6 maps (chunks of SUM_CHUNK plus a partial sum); both memory formats
    in one process make more variants than dynamo's default limit of 8, which fullgraph turns into
    an error: the kernel must stay compiled, not fall back to eager."""
    torch.manual_seed(0)
    for memory_format in (torch.channels_last, torch.contiguous_format):
        for t in range(1, 7):
            values = [torch.randn(2, 3, 4, 4).contiguous(memory_format=memory_format) for _ in range(t)]
            coeffs = torch.randn(t, 2, 3, 1, 1)
            expected = sum(c * v for c, v in zip(coeffs, values))
            torch.testing.assert_close(tail_kernels.weighted_sum("compiled", values, coeffs), expected)
    assert not tail_kernels.WEIGHTED_SUM.broken


def full_map_accumulations(arch: str, knobs: dict) -> int:
    """How many times autograd adds two full-map gradients (``aten::add_`` on a map-shaped tensor)
    in the backward of one block whose inputs are leaves (each read by this block only)."""
    from dlarepro.models.interactions import INTERACTIONS

    torch.manual_seed(0)
    module = set_tails(INTERACTIONS[arch](64, 2, **knobs).double(), "eager")
    branch, shortcut = (torch.randn(2, 64, 4, 4, dtype=torch.double, requires_grad=True) for _ in range(2))
    out, _ = module(0, branch, shortcut, module.begin(branch))
    with torch.profiler.profile(record_shapes=True) as prof:
        out.square().sum().backward()
    return sum(1 for e in prof.events() if e.name == "aten::add_" and list(e.input_shapes[0]) == [2, 64, 4, 4])


@pytest.mark.parametrize("arch,knobs", LAYER_ATTENTION[:3], ids=lambda v: v if isinstance(v, str) else "")
def test_the_join_sums_the_gradients_of_every_consumer(arch, knobs):
    """``y`` feeds the value convolution and the tail, the shortcut the join, the tail and (DLA-L)
    the refresh: the join's backward adds their gradients in its own pass, so autograd adds none."""
    assert full_map_accumulations(arch, knobs) == 0


@pytest.mark.parametrize("arch,mode", [("dla_l", "eager"), ("dla_l", "compiled"), ("dla_b", "compiled")])
def test_a_whole_model_compile_traces_the_fused_tails(arch, mode):
    """The run switch ``compile: true`` hands the whole model to ``torch.compile``: dynamo traces the
    tails' autograd Functions (the join's handles are views of its input and output), their kernels
    (which then run as plain functions inside that graph, not compiled again) and the channel
    convolutions, with no graph break, and gives the reference's outputs. Gradients are compared for
    DLA-L (depth 11); DLA-B needs two blocks per stage for its refresh (depth 20), where inductor's
    float32 gradients differ from eager ones by up to ~2 % with the reference tails too, so there
    only the outputs are compared (the float64 equality of every gradient is tested above)."""
    torch.manual_seed(0)
    reference = set_tails(build_model(arch, 11 if arch == "dla_l" else 20, "cifar10"), "reference")
    fused = set_tails(copy.deepcopy(reference), mode)
    x = torch.randn(4, 3, 32, 32)
    compiled = torch.compile(fused, fullgraph=True)  # a graph break would be an error
    out_f, out_r = compiled(x), reference(x)
    out_f.square().sum().backward()
    out_r.square().sum().backward()
    torch.testing.assert_close(out_f, out_r, rtol=1e-4, atol=1e-5)
    for (name, p_r), p_f in zip(reference.named_parameters(), fused.parameters()):
        assert (p_f.grad is None) == (p_r.grad is None), name
        if p_r.grad is not None and arch == "dla_l":
            torch.testing.assert_close(p_f.grad, p_r.grad, rtol=1e-3, atol=1e-5, msg=f"gradient of {name} differs")


@pytest.mark.parametrize("arch,knobs", [("mrla_b", {}), ("dla_b", {"dsu_state": "per_image"})])
def test_each_cached_value_map_gets_its_gradient_in_one_pass(arch, knobs):
    """Every block of a B stage reads every value map so far; the fused tails hand each block's
    gradient to the stage (ValueGradients), which sums each map's gradient once, DLA-B's pooled map
    included: autograd adds no full-map gradients of value maps, and nothing is left held after the
    backward."""
    from dlarepro.models.interactions import INTERACTIONS

    torch.manual_seed(0)
    blocks, shape = 4, (2, 64, 4, 4)

    def run(mode):
        torch.manual_seed(1)
        module = set_tails(INTERACTIONS[arch](64, blocks, **knobs).double(), mode)
        x = torch.randn(shape, dtype=torch.double, requires_grad=True)
        state, out = module.begin(x), x
        for index in range(blocks):
            out, state = module(index, torch.tanh(out), out, state)
        with torch.profiler.profile(record_shapes=True) as prof:
            out.square().sum().backward()
        adds = sum(1 for e in prof.events() if e.name == "aten::add_" and list(e.input_shapes[0]) == list(shape))
        return x.grad, [p.grad for p in module.parameters()], adds, state

    grad_ref, params_ref, _, _ = run("reference")
    grad, params, adds, state = run("eager")
    torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-11)
    for p, p_ref in zip(params, params_ref):
        torch.testing.assert_close(p, p_ref, rtol=1e-9, atol=1e-11)
    # the only full-map additions left: each block's input feeds its branch (the tanh here) and its
    # shortcut. Each map's gradient summed by autograd instead, block by block, made 6 more, and
    # DLA-B's GAP(V_i) (read by later blocks' refresh) 3 more when autograd added its gradient to
    # the map's: 10 and 13.
    assert adds == blocks
    assert state.value_grads.pending == {}


@pytest.mark.parametrize("arch", ["mrla_b", "dla_b"])
def test_bfloat16_training_of_the_b_tails_follows_the_reference(arch):
    """A bf16 autocast training step with the fused B tails (value gradients summed per stage, DLA-B's
    pooled maps inside the tail): every gradient is there, finite, and points where the reference's do."""
    reference, fused = twin_models(arch, {}, "eager", depth=20, dtype=torch.float32)
    x = torch.randn(4, 3, 32, 32)
    grads = []
    for model in (reference, fused):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.manual_seed(3)
            out = model(x)
        out.float().square().sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for g_r, g_f in zip(*grads):
        assert (g_r is None) == (g_f is None)
    flat = [torch.cat([g.float().flatten() for g in gs if g is not None]) for gs in grads]
    assert torch.isfinite(flat[1]).all()
    assert torch.nn.functional.cosine_similarity(flat[0], flat[1], dim=0) > 0.99
