"""The direct form of DLA-B, written as the facts sheet states it, for equivalence tests only.

Every cached key K_i and value map V_i is replaced by a refreshed copy at every later block:
K_i <- K_i * Dyn(K_i, c).h and V_i <- V_i * Dyn(GAP(V_i), c).h, one cell call per cached layer.
Memory grows with the square of the depth; the production code accumulates gates instead.
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F

from dlarepro.models.interactions import DLABase, gap


class DirectState:
    def __init__(self):
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.cell_state = None


def direct_forward(self: DLABase, index, branch, shortcut, state):
    if state is None or not isinstance(state, DirectState):
        state = DirectState()
    y = F.relu(branch + shortcut)
    pooled = gap(y)
    if state.cell_state is None:
        state.cell_state = self.cell.zero_state(pooled)
    _, state.cell_state = self.cell(pooled, state.cell_state)
    new_keys, new_values = [], []
    for key, value in zip(state.keys, state.values):
        key_gate, _ = self.cell(key, state.cell_state)
        value_gate, _ = self.cell(gap(value), state.cell_state)
        new_keys.append(key * key_gate)
        new_values.append(value * value_gate[:, :, None, None])
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
