"""The ``dsu_state`` knob of DLA-B and DLA-L: both refresh behaviours equal a direct float64 form
written from the description (outputs and every gradient), and only ``first_image`` couples the
images of a batch."""

from __future__ import annotations

import copy

import pytest
import torch

from dlarepro.methods import check_model_args
from dlarepro.models import build_model
from reference_dla_b import use_direct_form
from reference_dsu import use_direct_dla_l

DIRECT = {"dla_b": use_direct_form, "dla_l": use_direct_dla_l}


def different_images(n: int = 4, dtype=torch.float32) -> torch.Tensor:
    """Seeded noise at ``n`` brightness levels: images whose DSU states differ clearly."""
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(n, 3, 32, 32, generator=gen, dtype=dtype)
    return base + torch.linspace(-1.5, 1.5, n, dtype=dtype).view(n, 1, 1, 1)


@pytest.mark.parametrize("arch", ["dla_b", "dla_l"])
@pytest.mark.parametrize("dsu_state", ["per_image", "first_image"])
@pytest.mark.parametrize("train", [False, True])
def test_equals_direct_form_outputs_and_gradients(arch, dsu_state, train):
    torch.manual_seed(3)
    ours = build_model(arch, 20, "cifar100", dsu_state=dsu_state).double().train(train)
    direct = copy.deepcopy(ours)
    DIRECT[arch](direct)
    x = different_images(dtype=torch.double)
    x_ours, x_direct = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ours, out_direct = ours(x_ours), direct(x_direct)
    torch.testing.assert_close(out_ours, out_direct, rtol=1e-10, atol=1e-12)
    weights = torch.randn(out_ours.shape, generator=torch.Generator().manual_seed(1), dtype=torch.double)
    (out_ours * weights).sum().backward()
    (out_direct * weights).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_direct.grad, rtol=1e-8, atol=1e-12, msg="input gradient")
    for (name, p_ours), p_direct in zip(ours.named_parameters(), direct.parameters()):
        assert p_ours.grad is not None, name
        torch.testing.assert_close(p_ours.grad, p_direct.grad, rtol=1e-8, atol=1e-12, msg=name)


@pytest.mark.parametrize("arch", ["dla_b", "dla_l"])
def test_the_two_states_give_different_models(arch):
    """Same weights, same batch: the refresh state changes the output (else the tests above could not
    tell the behaviours apart)."""
    torch.manual_seed(3)
    per_image = build_model(arch, 20, "cifar100").double().eval()
    first_image = build_model(arch, 20, "cifar100", dsu_state="first_image").double().eval()
    first_image.load_state_dict(per_image.state_dict())
    x = different_images(dtype=torch.double)
    gap = (per_image(x) - first_image(x)).abs().max().item()
    assert gap > 1e-6, gap


@pytest.mark.parametrize("arch", ["dla_b", "dla_l"])
def test_only_first_image_couples_the_batch(arch):
    """An image's logits depend on the rest of its batch only under ``first_image`` (eval mode, so
    BatchNorm uses its running statistics and couples nothing). Float64, so that "equal" means equal
    to rounding and "depends" is far above it (DLA-B's coupling is ~1e-5 of the logits at init)."""
    x = different_images(5, torch.double)
    outputs = {}
    for dsu_state in ("per_image", "first_image"):
        torch.manual_seed(3)
        model = build_model(arch, 20, "cifar10", dsu_state=dsu_state).double().eval()
        with torch.no_grad():
            together = model(x)
            alone = torch.cat([model(x[i:i + 1]) for i in range(len(x))])
            reordered = model(x.flip(0)).flip(0)
        outputs[dsu_state] = (together, alone, reordered)
    together, alone, reordered = outputs["per_image"]
    torch.testing.assert_close(together, alone, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(together, reordered, rtol=1e-10, atol=1e-12)
    together, alone, reordered = outputs["first_image"]
    # image 0 reads its own state either way; every other image reads image 0's
    torch.testing.assert_close(together[0], alone[0], rtol=1e-10, atol=1e-12)
    assert (together[1:] - alone[1:]).abs().amax(dim=1).min() > 1e-7
    assert (together - reordered).abs().amax(dim=1).min() > 1e-7
    # a batch of one is its own first image: both behaviours agree there
    torch.testing.assert_close(alone, outputs["per_image"][1], rtol=1e-10, atol=1e-12)


def test_knob_is_validated_and_named():
    assert check_model_args("dla_l", 20, "cifar10")["dsu_state"] == "per_image"
    assert check_model_args("dla_b", 50, "imagenet", dsu_state="first_image")["dsu_state"] == "first_image"
    with pytest.raises(ValueError, match="dsu_state='last_image' is not one of"):
        check_model_args("dla_l", 20, "cifar10", dsu_state="last_image")
    with pytest.raises(ValueError, match="mrla_l does not take the knob 'dsu_state'"):
        check_model_args("mrla_l", 20, "cifar10", dsu_state="first_image")
