"""The model zoo: exact parameter counts, knobs, validation, and the efficient DLA-B."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from dlarepro.methods import METHODS, check_model_args
from dlarepro.models import build_model
from dlarepro.models.cells import DSUCell
from reference_dla_b import use_direct_form


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# Counts of the official implementations, instantiated on the CPU: (CIFAR-10, CIFAR-100).
OFFICIAL_CIFAR = {
    "none": {20: (220378, 243508), 56: (591322, 614452), 110: (1147738, 1170868)},
    "se": {20: (241882, 265012), 56: (655834, 678964), 110: (1276762, 1299892)},
    "eca": {20: (220404, 243534), 56: (591400, 614530), 110: (1147894, 1171024)},
    "dia": {20: (439226, 462356), 56: (810170, 833300), 110: (1366586, 1389716)},
    "mrla_b": {20: (230286, 253416), 56: (621046, 644176), 110: (1207186, 1230316)},
    "mrla_l": {20: (231182, 254312), 56: (623734, 646864), 110: (1212562, 1235692)},
    "dla_b": {20: (405230, 428360), 56: (795990, 819120), 110: (1382130, 1405260)},
    "dla_l": {20: (410158, 433288), 56: (802710, 825840), 110: (1391538, 1414668)},
}


@pytest.mark.parametrize("arch", sorted(OFFICIAL_CIFAR))
@pytest.mark.parametrize("depth", [20, 56, 110])
def test_cifar_counts_equal_official(arch, depth):
    for dataset, expected in zip(("cifar10", "cifar100"), OFFICIAL_CIFAR[arch][depth]):
        assert n_params(build_model(arch, depth, dataset)) == expected


@pytest.mark.parametrize(
    "arch,knobs,depth,expected",
    [
        # Table 4 cells in DLA-L-110 (CIFAR-100): full RNN and LSTM cells, the DIA cell.
        ("dla_l", {"cell": "rnn"}, 110, 1235692 + 4032 + 2 * 86016 + 2 * 448),
        ("dla_l", {"cell": "lstm"}, 110, 1235692 + 4032 + 8 * 86016 + 8 * 448),
        ("dla_l", {"cell": "dia"}, 110, 1235692 + 4032 + 218848),
        # Table 6: LII on the plain ResNet; cell=dia is DIANet.
        ("dia", {"cell": "lstm"}, 56, 614452 + 8 * 86016 + 8 * 448),
        ("dia", {"cell": "dsu"}, 56, 614452 + 174944),
        ("dia", {"cell": "lstm"}, 110, 1170868 + 8 * 86016 + 8 * 448),
        ("dia", {"cell": "dsu"}, 110, 1170868 + 174944),
    ],
)
def test_ablation_counts(arch, knobs, depth, expected):
    # MRLA-L-110 1,235,692 + three shared depthwise convs 4,032 + the cells, with
    # 86016 = 64² + 128² + 256² and 448 = 64 + 128 + 256 (the three stage widths).
    assert n_params(build_model(arch, depth, "cifar100", **knobs)) == expected


def test_sigma_does_not_change_counts():
    base = n_params(build_model("dla_l", 56, "cifar100"))
    for sigma in ("identity", "tanh", "relu"):
        assert n_params(build_model("dla_l", 56, "cifar100", sigma=sigma)) == base


@pytest.mark.parametrize(
    "arch,depth,expected",
    [("none", 50, 25_557_032), ("mrla_l", 50, 25_738_452), ("dla_l", 50, 28_581_812),
     ("none", 101, 44_549_160), ("mrla_l", 101, 44_939_646), ("dla_l", 101, 47_783_006)],
)
def test_imagenet_counts(arch, depth, expected):
    assert n_params(build_model(arch, depth, "imagenet")) == expected


def test_imagenet_reduction_32_gives_paper_dla_l_50():
    assert round(n_params(build_model("dla_l", 50, "imagenet", reduction=32)) / 1e6, 1) == 27.2


def test_any_valid_cifar_depth_builds_and_runs():
    for depth in (11, 29, 47):
        out = build_model("dla_b", depth, "cifar10")(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 10)


@pytest.mark.parametrize("arch", list(METHODS))
def test_every_arch_trains_one_step(arch):
    torch.manual_seed(0)
    model = build_model(arch, 20, "cifar100", **({"drop_path": 0.2} if "la" in arch else {}))
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters()), "every parameter must get a gradient"
    opt.step()
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "args,message",
    [
        (("dla_x", 20, "cifar10"), "unknown arch 'dla_x'"),
        (("none", 21, "cifar10"), "9n+2"),
        (("none", 2, "cifar10"), "9n+2"),
        (("none", 20, "imagenet"), "ImageNet depth must be one of [50, 101]"),
        (("none", 56, "svhn"), "unknown dataset 'svhn'"),
        (("none", "56", "cifar10"), "depth must be an integer"),
    ],
)
def test_bad_requests_are_named(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_model(*args)


@pytest.mark.parametrize(
    "arch,knobs,message",
    [
        ("dla_l", {"cell": "gru"}, "cell='gru'"),
        ("dla_l", {"sigma": "softplus"}, "sigma='softplus'"),
        ("dla_l", {"cell": "lstm", "sigma": "tanh"}, "only applies to the DSU"),
        ("dia", {"cell": "rnn"}, "cell='rnn'"),
        ("se", {"cell": "dsu"}, "se does not take the knob 'cell'"),
        ("none", {"drop_path": 0.2}, "does not take the knob 'drop_path'"),
        ("mrla_l", {"drop_path": 1.5}, "drop_path must be a number in"),
        ("dla_b", {"reduction": 0}, "reduction must be a positive integer"),
    ],
)
def test_bad_knobs_are_named(arch, knobs, message):
    with pytest.raises(ValueError, match=message):
        check_model_args(arch, 20, "cifar100", **knobs)


def test_imagenet_defaults_to_official_reduction():
    assert check_model_args("dla_l", 50, "imagenet")["reduction"] == 16
    assert check_model_args("dla_l", 56, "cifar10")["reduction"] == 4  # every default filled in


@pytest.mark.parametrize("sigma", ["sigmoid", "identity", "tanh", "relu"])
def test_dsu_sigma_is_the_state_normalisation(sigma):
    torch.manual_seed(0)
    cell = DSUCell(8, reduction=4, sigma=sigma)
    x, c = torch.randn(3, 8), torch.randn(3, 8)
    h = {"sigmoid": torch.sigmoid, "identity": lambda t: t, "tanh": torch.tanh, "relu": torch.relu}[sigma](c)
    out, (h_new, c_new) = cell(x, (h, c))
    i, f, g = (cell.input_path(x) + cell.hidden_path(h)).chunk(3, dim=-1)
    expected_c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    torch.testing.assert_close(c_new, expected_c)
    torch.testing.assert_close(out, h_new)
    torch.testing.assert_close(h_new, {"sigmoid": torch.sigmoid, "identity": lambda t: t,
                                       "tanh": torch.tanh, "relu": torch.relu}[sigma](expected_c))


def test_cells_broadcast_over_stacked_inputs():
    """DLA refreshes all cached layers in one call: stacked inputs equal one call each."""
    torch.manual_seed(0)
    for name in ("dsu", "dia", "lstm", "rnn"):
        from dlarepro.models.cells import make_cell

        cell = make_cell(name, 16)
        state = (torch.randn(2, 16), torch.randn(2, 16))
        xs = torch.randn(5, 2, 16)
        stacked, _ = cell(xs, state)
        one_by_one = torch.stack([cell(x, state)[0] for x in xs])
        torch.testing.assert_close(stacked, one_by_one)


@pytest.mark.parametrize("depth", [20, 56])
@pytest.mark.parametrize("train", [False, True])
def test_efficient_dla_b_equals_direct_form(depth, train):
    torch.manual_seed(1)
    efficient = build_model("dla_b", depth, "cifar100").double()
    direct = copy.deepcopy(efficient)
    use_direct_form(direct)
    efficient.train(train)
    direct.train(train)
    x = torch.randn(3, 3, 32, 32, dtype=torch.double)
    out_e, out_d = efficient(x), direct(x)
    torch.testing.assert_close(out_e, out_d, rtol=1e-9, atol=1e-10)
    out_e.square().sum().backward()
    out_d.square().sum().backward()
    for (name, pe), pd in zip(efficient.named_parameters(), direct.parameters()):
        torch.testing.assert_close(pe.grad, pd.grad, rtol=1e-7, atol=1e-9, msg=name)


def test_dla_b_refresh_changes_the_output():
    """The refresh must matter: DLA-B with its cell differs from MRLA-B with the same weights."""
    torch.manual_seed(0)
    dla = build_model("dla_b", 20, "cifar10").eval()
    mrla = build_model("mrla_b", 20, "cifar10").eval()
    mrla.load_state_dict({k: v for k, v in dla.state_dict().items() if ".cell." not in k})
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(dla(x), mrla(x))


def test_channels_last_gives_same_output():
    torch.manual_seed(0)
    model = build_model("dla_l", 20, "cifar10").eval()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-5)


def test_method_specs_match_the_registry():
    """The torch-free specs the workflow validates with describe the classes that are built."""
    import inspect

    from dlarepro.models.interactions import INTERACTIONS

    assert set(INTERACTIONS) == set(METHODS)
    for arch, cls in INTERACTIONS.items():
        params = inspect.signature(cls.__init__).parameters
        accepted = {k for k in params if k not in ("self", "channels", "num_blocks", "knobs")}
        assert accepted == set(METHODS[arch].knob_names), arch
        assert {k: params[k].default for k in accepted} == METHODS[arch].defaults("cifar"), arch


def test_grid_validation_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, dlarepro.grid, dlarepro.kinds, dlarepro.submit, dlarepro.cli; "
            "dlarepro.cli.build_parser(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
@pytest.mark.parametrize("shape", [(4, 64), (3, 2, 32)])
def test_channel_conv_equals_library_conv1d(kernel_size, shape):
    """The shifted multiply-adds give what ``conv1d`` gives, outputs and both gradients, in float64
    (also for stacked ``[t, B, C]`` vectors, as DLA-B's keys)."""
    from dlarepro.models.parts import channel_conv

    torch.manual_seed(kernel_size)
    v = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(1, 1, kernel_size, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(*shape, dtype=torch.float64)
    out = channel_conv(v, weight)
    expected = torch.nn.functional.conv1d(v.reshape(-1, 1, shape[-1]), weight, padding=kernel_size // 2).reshape(shape)
    got_grads = torch.autograd.grad(out, (v, weight), grad)
    want_grads = torch.autograd.grad(expected, (v, weight), grad)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    for got, want in zip(got_grads, want_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(channel_conv, (v[:2, :9].detach().requires_grad_(), weight))


def test_channel_conv_refuses_an_even_kernel():
    from dlarepro.models.parts import channel_conv

    with pytest.raises(ValueError, match="odd kernel size, got 4"):
        channel_conv(torch.zeros(2, 8), torch.zeros(1, 1, 4))
