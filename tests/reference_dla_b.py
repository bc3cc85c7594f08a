"""The direct form of DLA-B, written as the facts sheet states it, for equivalence tests only.

Every cached key K_i and value map V_i is replaced by a refreshed copy at every later block:
K_i <- K_i * Dyn(K_i, c).h and V_i <- V_i * Dyn(GAP(V_i), c).h, one DSU step per cached layer and
per image (``reference_dsu.dsu_step``), each image reading the state row its ``dsu_state`` says.
Memory grows with the square of the depth; the production code accumulates gates instead.
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F

from dlarepro.models.interactions import DLABase
from reference_dsu import dsu_step, pool, refresh_row, zero_states


class DirectState:
    def __init__(self):
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.cell_state: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # one (h, c) per image


def direct_forward(self: DLABase, index, branch, shortcut, state):
    if state is None or not isinstance(state, DirectState):
        state = DirectState()
    y = F.relu(branch + shortcut)
    batch, channels = y.shape[:2]
    pooled = pool(y)
    if state.cell_state is None:
        state.cell_state = zero_states(batch, channels, y)
    state.cell_state = [dsu_step(self.cell, pooled[b], *state.cell_state[b]) for b in range(batch)]

    def gate(tokens):  # [B, C] -> the refresh gate of each image, [B, C]
        return torch.stack([dsu_step(self.cell, tokens[b], *state.cell_state[refresh_row(b, self.dsu_state)])[0]
                            for b in range(batch)])

    new_keys = [key * gate(key) for key in state.keys]
    new_values = [value * gate(pool(value))[:, :, None, None] for value in state.values]
    state.keys = new_keys + [self.key[index](pooled)]
    state.values = new_values + [self.value[index](y)]
    query = self.query[index](pooled)
    b, c = query.shape
    d = c // self.heads
    q = query.view(b, self.heads, 1, d)
    k = torch.stack(state.keys, dim=1).view(b, len(state.keys), self.heads, d).transpose(1, 2)
    weights = torch.softmax((q * k).sum(-1) / math.sqrt(d), dim=-1)  # [b, heads, t]
    out = torch.zeros_like(y)
    for i, value in enumerate(state.values):
        w = weights[:, :, i].repeat_interleave(d, dim=1)[:, :, None, None]
        out = out + w * value
    return y + self.drop_path(F.relu(self.norm[index](out))), state


def use_direct_form(model) -> None:
    """Swap every DLA-B stage of ``model`` to the direct form (in place)."""
    for module in model.modules():
        if isinstance(module, DLABase):
            module.forward = types.MethodType(direct_forward, module)
            module.begin = lambda x: DirectState()
