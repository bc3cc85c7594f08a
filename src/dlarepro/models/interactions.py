"""Layer-interaction methods, one class each, behind one registry.

A ResNet stage hands every block's two parts, the residual ``branch`` (after the last BN) and the
``shortcut``, to its stage's interaction, which returns the block output. Methods that carry state
across the blocks of a stage (DIA/LII, MRLA, DLA) keep it in a per-forward ``state`` object that
the stage threads through; per-block methods (SE, ECA) ignore it. Adding a method is one class
with a ``@register`` line, plus its spec (names, colour, knobs) in :mod:`dlarepro.methods`; a stage
receives the class with its knobs bound (``functools.partial``) and calls it with
``(channels, num_blocks)``.

Placement and sizes follow the official implementations (measured facts, not their code).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import native_base, native_tails, native_vectors, tails
from .cells import make_cell
from .parts import ChannelConv, DropPath, as_map, depthwise3x3, eca_kernel_size, gap, head_scores, per_channel

HEAD_DIM = 32  # channels per layer-attention head (MRLA / DLA)

#: name -> interaction class
INTERACTIONS: dict[str, type["StageInteraction"]] = {}


def register(name: str) -> Callable[[type["StageInteraction"]], type["StageInteraction"]]:
    def add(cls: type[StageInteraction]) -> type[StageInteraction]:
        INTERACTIONS[name] = cls
        cls.name = name
        return cls

    return add


class StageInteraction(nn.Module):
    """How the blocks of one stage interact (``__init__`` keyword arguments are its knobs)."""

    name: str = ""

    def __init__(self, channels: int, num_blocks: int, **knobs: Any):
        super().__init__()
        self.channels = channels
        self.num_blocks = num_blocks

    def begin(self, x: Tensor) -> Any:
        """Fresh per-stage state at the start of a forward pass."""
        return None

    def forward(self, index: int, branch: Tensor, shortcut: Tensor, state: Any) -> tuple[Tensor, Any]:
        raise NotImplementedError


@register("none")
class Plain(StageInteraction):
    """The plain ResNet: ``ReLU(branch + shortcut)``."""

    def forward(self, index, branch, shortcut, state):
        return F.relu(branch + shortcut), state


class PerBlockGate(StageInteraction):
    """Channel attention computed per block from the branch, applied before the addition."""

    def make_gate(self, channels: int) -> nn.Module:
        raise NotImplementedError

    def __init__(self, channels: int, num_blocks: int, **knobs: Any):
        super().__init__(channels, num_blocks)
        self.gates = nn.ModuleList(self.make_gate(channels) for _ in range(num_blocks))

    def forward(self, index, branch, shortcut, state):
        gate = torch.sigmoid(self.gates[index](gap(branch)))
        return F.relu(branch * as_map(gate) + shortcut), state


@register("se")
class SqueezeExcitation(PerBlockGate):
    """SE (Hu et al.): bias-free two-layer MLP with reduction 16."""

    REDUCTION = 16

    def make_gate(self, channels):
        hidden = channels // self.REDUCTION
        return nn.Sequential(
            nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True), nn.Linear(hidden, channels, bias=False)
        )


@register("eca")
class EfficientChannelAttention(PerBlockGate):
    """ECA (Wang et al.): a bias-free 1-D convolution across channels, adaptive kernel size."""

    def make_gate(self, channels):
        return ChannelConv(eca_kernel_size(channels))


@register("dia")
class LayerwiseIntegration(StageInteraction):
    """DIANet / LII: one cell per stage gates every block's branch; ``h, c`` reset at each stage.

    ``cell='dia'`` is DIANet; ``'lstm'`` and ``'dsu'`` are the paper's Table 6 variants.
    """

    def __init__(self, channels, num_blocks, cell: str = "dia", sigma: str = "sigmoid", reduction: int = 4):
        super().__init__(channels, num_blocks)
        self.cell = make_cell(cell, channels, reduction=reduction, sigma=sigma)

    def forward(self, index, branch, shortcut, state):
        pooled = gap(branch)
        if state is None:
            state = self.cell.zero_state(pooled)
        gate, state = self.cell(pooled, state)
        return F.relu(branch * as_map(gate) + shortcut), state


class LayerAttentionBase(StageInteraction):
    """Shared parts of MRLA and DLA: per-block query/key channel convolutions and depthwise values,
    a BN on the attention output and drop-path on the attention branch."""

    def __init__(self, channels, num_blocks, drop_path: float = 0.0):
        super().__init__(channels, num_blocks)
        if channels % HEAD_DIM:
            raise ValueError(f"{self.name}: {channels} channels do not split into heads of {HEAD_DIM}")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"{self.name}: drop_path must be in [0, 1), got {drop_path!r}")
        self.heads = channels // HEAD_DIM
        k = eca_kernel_size(channels)
        self.query = nn.ModuleList(ChannelConv(k) for _ in range(num_blocks))
        self.key = nn.ModuleList(ChannelConv(k) for _ in range(num_blocks))
        self.value = nn.ModuleList(depthwise3x3(channels) for _ in range(num_blocks))
        self.norm = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(num_blocks))
        self.drop_path = DropPath(drop_path)
        #: fused tails or the reference code (:func:`tails.set_tails`; None: ``DLAREPRO_TAILS``)
        self.tails_mode: str | None = None

    def query_key(self, index: int, pooled: Tensor, native: bool = False) -> tuple[Tensor, Tensor]:
        """The block's query and key of ``pooled``; ``native``: the channel convolutions in C++ where
        they apply (:func:`native_vectors.channel_conv`)."""
        convs = (self.query[index], self.key[index])
        if native and native_vectors.vectors_apply(pooled, *(c.conv.weight for c in convs)):
            return tuple(native_vectors.channel_conv(pooled, c.conv.weight) for c in convs)
        return tuple(c(pooled) for c in convs)

    def tail_flavour(self, index: int, x: Tensor) -> str | None:
        """The fused tails' kernel flavour for this block, None to run the reference code below."""
        return tails.flavour(self.tails_mode, x, self.norm[index])


class LightAttentionBase(LayerAttentionBase):
    """MRLA-light and DLA-light: ``out = y + DropPath(BN(LA(y) + λ ⊙ s))`` after the block's ReLU,
    where ``LA(y)`` is the depthwise value map scaled per head by ``sigmoid(<q, k> / sqrt(d))``.

    ``forward`` is the reference, op by op; ``forward_fused`` computes the same with the full-map
    steps fused (:mod:`.tails`), per-channel constants folded into small tensors either way.
    """

    def __init__(self, channels, num_blocks, drop_path: float = 0.0):
        super().__init__(channels, num_blocks, drop_path)
        self.lambdas = nn.ParameterList(nn.Parameter(torch.randn(channels, 1, 1)) for _ in range(num_blocks))

    def head_weights(self, index: int, pooled: Tensor, native: bool = False) -> Tensor:
        """``sigmoid(<q_h, k_h> / sqrt(d))`` per head, expanded to a ``[B, C, 1, 1]`` map scale;
        ``native``: in one C++ call each way where it applies (:func:`native_vectors.light_head`)."""
        query, key = self.query[index].conv.weight, self.key[index].conv.weight
        if native and native_vectors.vectors_apply(pooled, query, key):
            return as_map(native_vectors.light_head(pooled, query, key, self.heads))
        q, k = self.query_key(index, pooled)
        return as_map(per_channel(torch.sigmoid(head_scores(q, k, self.heads)), self.channels))

    def finish(self, index: int, y: Tensor, attended: Tensor) -> Tensor:
        return y + self.drop_path(self.norm[index](attended))


@register("mrla_l")
class MRLALight(LightAttentionBase):
    """MRLA-L (Fang et al.): the previous output enters through ``λ ⊙ shortcut``."""

    def forward(self, index, branch, shortcut, state):
        flavour = self.tail_flavour(index, branch)
        lam = self.lambdas[index][None]
        if flavour == "native" and native_tails.native_applies(branch, shortcut):  # join, convolution, tail: C++
            block, pooled = native_tails.light_join(branch, shortcut, self.value[index].weight, self.norm[index])
            out = native_tails.light_tail(block, pooled, self.head_weights(index, pooled, native=True), lam,
                                          self.norm[index], self.drop_path.mask(branch))
            return out, state
        if flavour:
            j = tails.join(branch, shortcut, flavour, shortcut_handles=1)  # handles: see tails.Join
            out = tails.light_tail(j.y, j.shortcuts[0], self.value[index](j.y_value),
                                   self.head_weights(index, j.pooled_y), lam, self.norm[index], self.drop_path,
                                   flavour)
            return out, state
        y = F.relu(branch + shortcut)
        weights = self.head_weights(index, gap(y))
        attended = torch.addcmul(self.lambdas[index] * shortcut, self.value[index](y), weights)
        return self.finish(index, y, attended), state


@register("dla_l")
class DLALight(LightAttentionBase):
    """DLA-L: MRLA-L whose shortcut is refreshed by the stage's recurrent cell (backward path)
    and a depthwise convolution shared by the stage: ``s ← s ⊙ Dyn(GAP(s), c) + DW(s)``."""

    def __init__(self, channels, num_blocks, drop_path: float = 0.0, cell: str = "dsu",
                 sigma: str = "sigmoid", reduction: int = 4, dsu_state: str = "per_image"):
        super().__init__(channels, num_blocks, drop_path)
        self.cell = make_cell(cell, channels, reduction=reduction, sigma=sigma)
        self.refresh_conv = depthwise3x3(channels)
        self.dsu_state = dsu_state

    def forward(self, index, branch, shortcut, state):
        flavour = self.tail_flavour(index, branch)
        # λ ⊙ (s ⊙ g + DW(s)) = s ⊙ (λ g) + DW_{λW}(s): λ folded into the gate and the conv weights
        lam = self.lambdas[index]
        refresh_weight = self.refresh_conv.weight * lam.unsqueeze(1)
        native = flavour == "native" and native_tails.native_applies(branch, shortcut)
        if native:  # join, both convolutions and tail in C++
            block, pooled, pooled_s = native_tails.light_join(branch, shortcut, self.value[index].weight,
                                                              self.norm[index], refresh_weight, pool_shortcut=True)
        elif flavour:
            j = tails.join(branch, shortcut, flavour, pool_shortcut=True, shortcut_handles=2)  # see tails.Join
            y, y_value, pooled, pooled_s = j.y, j.y_value, j.pooled_y, j.pooled_s
            shortcut, refresh_input = j.shortcuts
        else:
            y = y_value = F.relu(branch + shortcut)
            pooled, pooled_s, refresh_input = gap(y), gap(shortcut), shortcut
        # the stage's state: the cell's and its hidden path (read by this block's refresh and the next context)
        cell_state, hidden = (self.cell.zero_state(pooled), None) if state is None else state
        # forward path: context from y; backward path: the shortcut's refresh gate (its new state dropped)
        cell_state, hidden = native_vectors.context_step(self.cell, pooled, cell_state, hidden, native)
        gate = native_vectors.refresh_gates(self.cell, pooled_s, cell_state, hidden, self.dsu_state, native)
        state = cell_state, hidden
        weights, alpha = self.head_weights(index, pooled, native), as_map(gate) * lam
        if native:
            mask = self.drop_path.mask(branch)
            return native_tails.light_tail(block, pooled, weights, alpha, self.norm[index], mask), state
        refreshed = F.conv2d(refresh_input, refresh_weight, padding=1, groups=self.channels)
        if flavour:
            out = tails.light_tail(y, shortcut, self.value[index](y_value), weights, alpha, self.norm[index],
                                   self.drop_path, flavour, refreshed)
            return out, state
        attended = torch.addcmul(torch.addcmul(refreshed, shortcut, alpha), self.value[index](y), weights)
        return self.finish(index, y, attended), state


class BaseAttentionState:
    """What MRLA-B / DLA-B remember within a stage.

    Value maps are kept as produced (``values``); DLA's per-channel refresh gates are accumulated
    in ``value_gates`` instead of being multiplied into fresh copies of every map, so memory stays
    linear in depth. ``keys`` hold the (refreshed) key vectors, ``pooled`` the GAP of each value map.
    """

    def __init__(self, pool_values: bool):
        self.pool_values = pool_values  # only DLA-B's refresh reads GAP(V_i): a pass over each map
        self.values: list[Tensor] = []
        self.keys: Tensor | None = None  # [t, B, C]
        self.pooled: Tensor | None = None  # [t, B, C]
        self.value_gates: Tensor | None = None  # [t, B, C] or None while no refresh happened
        self.cell_state = None
        self.hidden = None  # the cell's hidden path of cell_state's h (DLA-B: its refresh and next context read it)
        self.value_grads = tails.ValueGradients()  # the fused tails' backward: each map's gradient summed once

    def append(self, key: Tensor, value: Tensor, pool: bool = True) -> None:
        """A block's key and value map; with ``pool=False`` the GAP of the map comes later
        (:meth:`add_pooled`), from the fused tail, which reads the map anyway."""
        self.add_key(key)
        self.values.append(value)
        if self.pool_values and pool:
            self.add_pooled(gap(value))

    def add_key(self, key: Tensor) -> None:
        """A block's key alone: its value map comes later (``values.append``), from the native tail
        that computes it (:func:`native_base.stencil_base_tail`)."""
        key = key.unsqueeze(0)
        if self.keys is None:
            self.keys = key
        else:
            self.keys = torch.cat([self.keys, key])
            if self.value_gates is not None:
                self.value_gates = torch.cat([self.value_gates, torch.ones_like(key)])

    def add_pooled(self, pooled: Tensor) -> None:
        pooled = pooled.unsqueeze(0)
        self.pooled = pooled if self.pooled is None else torch.cat([self.pooled, pooled])


class BaseAttention(LayerAttentionBase):
    """MRLA-B: softmax attention of the block's query over the keys of every block so far in the
    stage, ``o = Σ_i w_i V_i`` per head; ``out = y + DropPath(ReLU(BN(o)))``."""

    def __init__(self, channels, num_blocks, drop_path: float = 0.0):
        super().__init__(channels, num_blocks, drop_path)
        #: when a list, every block appends its attention scores ``[B, heads, t]`` (Figure 2)
        self.captured: list[Tensor] | None = None

    #: whether the state keeps GAP of every value map (DLA-B's refresh reads them)
    pools_values = False

    def begin(self, x):
        return BaseAttentionState(self.pools_values)

    def refresh(self, state: BaseAttentionState, pooled_y: Tensor, native: bool) -> None:
        """Hook for DLA-B (``native``: its cell's gates in C++); MRLA-B keeps its tokens static."""

    def forward(self, index, branch, shortcut, state: BaseAttentionState):
        flavour = self.tail_flavour(index, branch)
        # native: join, value convolution and tail in C++; V_t computed in the tail's passes, its
        # gradient taken through the convolution in the join's backward
        stencil = flavour == "native" and native_tails.native_applies(branch, shortcut, *state.values)
        if stencil:
            block, y, pooled = native_base.base_join(branch, shortcut, self.value[index].weight)
        elif flavour:
            j = tails.join(branch, shortcut, flavour)
            y, y_value, pooled = j.y, j.y_value, j.pooled_y
        else:
            y = y_value = F.relu(branch + shortcut)
            pooled = gap(y)
        self.refresh(state, pooled, stencil)
        pool_in_tail = bool(flavour) and state.pool_values  # DLA-B: GAP(V) with the tail, gradient included
        query, key = self.query_key(index, pooled, stencil)
        if stencil:
            state.add_key(key)
        else:
            state.append(key, self.value[index](y_value), pool=not pool_in_tail)
        scores = torch.softmax(head_scores(query, state.keys, self.heads), dim=0)  # [t, B, heads]
        if self.captured is not None:
            self.captured.append(scores.detach().permute(1, 2, 0))
        coeffs = per_channel(scores, self.channels)  # [t, B, C]
        if state.value_gates is not None:
            coeffs = coeffs * state.value_gates
        if stencil:
            out, value, *pooled_value = native_base.stencil_base_tail(
                y, self.value[index].weight, state.values, coeffs, self.norm[index], self.drop_path, state.value_grads,
                pool_in_tail, block)
            state.values.append(value)
            if pooled_value:
                state.add_pooled(pooled_value[0])
            return out, state
        if flavour:
            out = tails.base_tail(y, state.values, coeffs, self.norm[index], self.drop_path, flavour,
                                  state.value_grads, pool_newest=pool_in_tail)
            if pool_in_tail:
                out, pooled_value = out
                state.add_pooled(pooled_value)
            return out, state
        out = state.values[0] * as_map(coeffs[0])
        for value, coeff in zip(state.values[1:], coeffs[1:]):
            out = torch.addcmul(out, value, as_map(coeff))
        return y + self.drop_path(F.relu(self.norm[index](out))), state


register("mrla_b")(BaseAttention)


@register("dla_b")
class DLABase(BaseAttention):
    """DLA-B: before each block attends, the stage's cell (updated with ``GAP(y)``) regates every
    cached key and value map; gates compound across later blocks.

    Because each gate is per channel, ``GAP(V ⊙ g) = GAP(V) ⊙ g``: all refreshes of a block run on
    vectors in one batched cell call, and maps are scaled only inside the weighted sum.
    """

    pools_values = True

    def __init__(self, channels, num_blocks, drop_path: float = 0.0, cell: str = "dsu",
                 sigma: str = "sigmoid", reduction: int = 4, dsu_state: str = "per_image"):
        super().__init__(channels, num_blocks, drop_path)
        self.cell = make_cell(cell, channels, reduction=reduction, sigma=sigma)
        self.dsu_state = dsu_state

    def refresh(self, state: BaseAttentionState, pooled_y: Tensor, native: bool) -> None:
        if state.cell_state is None:
            state.cell_state = self.cell.zero_state(pooled_y)
        state.cell_state, state.hidden = native_vectors.context_step(self.cell, pooled_y, state.cell_state,
                                                                     state.hidden, native)
        if state.keys is None:
            return
        gates_so_far = state.value_gates if state.value_gates is not None else 1.0
        tokens = torch.cat([state.keys, state.pooled * gates_so_far])  # [2t, B, C]
        gates = native_vectors.refresh_gates(self.cell, tokens, state.cell_state, state.hidden, self.dsu_state, native)
        key_gates, value_gates = gates.chunk(2)
        state.keys = state.keys * key_gates
        state.value_gates = value_gates if state.value_gates is None else state.value_gates * value_gates
