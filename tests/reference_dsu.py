"""Direct, unoptimised forms of the DSU and of DLA-L, for equivalence tests only.

Written from the description (ARCHITECTURE.md, issue 12), not from the production code: one DSU
step per image on ``[C]`` vectors, plain matrix products, and a loop over the images of the batch.
The two refresh behaviours differ in one place, which state row an image's refresh reads:

- ``per_image`` (the paper's equations): image ``b`` reads its own ``(h_b, c_b)``;
- ``first_image`` (the official code: its DSU takes ``hidden[0][0]`` of ``[B, C]`` states): every
  image reads image 0's ``(h_0, c_0)``, the state *after* this block's forward-path update, with
  gradients flowing into image 0's state from every image.

The production code broadcasts one ``[1, C]`` row instead (``cells.refresh_state``).
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F

from dlarepro.models.interactions import DLALight

HEAD_DIM = 32


def mlp(path, v):
    """``Linear -> ReLU -> Linear`` (the DSU's input and hidden paths) on one vector."""
    first, last = path[0], path[2]
    return last.weight @ torch.relu(first.weight @ v + first.bias) + last.bias


def dsu_step(cell, x, h, c):
    """One DSU step for one image (``x, h, c``: ``[C]``): gates i, f, g from the sum of both paths,
    ``c' = σ(f)·c + σ(i)·tanh(g)``, ``h' = sigmoid(c')``. Returns ``(h', c')``."""
    assert cell.sigma_name == "sigmoid", "the direct form covers the paper's DSU (sigma = sigmoid)"
    n = x.shape[0]
    gates = mlp(cell.input_path, x) + mlp(cell.hidden_path, h)
    i, f, g = gates[:n], gates[n:2 * n], gates[2 * n:]
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(c_new), c_new


def refresh_row(image: int, dsu_state: str) -> int:
    """The state row that image ``image``'s refresh reads."""
    return {"per_image": image, "first_image": 0}[dsu_state]


def zero_states(batch: int, channels: int, like: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    zero = like.new_zeros(channels)
    return [(zero, zero) for _ in range(batch)]


def pool(x):
    return x.mean(dim=(2, 3))


def dla_l_direct_forward(self: DLALight, index, branch, shortcut, state):
    """DLA-L per block, as described: forward path ``(h, c) <- DSU(GAP(y), (h, c))`` per image, backward
    path ``g = DSU(GAP(s), state row).h`` (new state dropped), ``s_ref = s ⊙ g + DW(s)``,
    ``out = y + DropPath(BN(LA(y) + λ ⊙ s_ref))``. ``state``: one ``(h, c)`` per image."""
    y = F.relu(branch + shortcut)
    batch, channels = y.shape[:2]
    pooled, pooled_s = pool(y), pool(shortcut)
    if state is None:
        state = zero_states(batch, channels, y)
    state = [dsu_step(self.cell, pooled[b], *state[b]) for b in range(batch)]
    gate = torch.stack([dsu_step(self.cell, pooled_s[b], *state[refresh_row(b, self.dsu_state)])[0]
                        for b in range(batch)])
    refreshed = shortcut * gate[:, :, None, None] + F.conv2d(shortcut, self.refresh_conv.weight, padding=1,
                                                             groups=channels)
    query = self.query[index](pooled).view(batch, -1, HEAD_DIM)
    key = self.key[index](pooled).view(batch, -1, HEAD_DIM)
    head_weight = torch.sigmoid((query * key).sum(-1) / math.sqrt(HEAD_DIM))  # [B, heads]
    light = self.value[index](y) * head_weight.repeat_interleave(HEAD_DIM, dim=1)[:, :, None, None]
    attended = light + self.lambdas[index] * refreshed
    return y + self.drop_path(self.norm[index](attended)), state


def use_direct_dla_l(model) -> None:
    """Swap every DLA-L stage of ``model`` to the direct form (in place)."""
    for module in model.modules():
        if isinstance(module, DLALight):
            module.forward = types.MethodType(dla_l_direct_forward, module)
