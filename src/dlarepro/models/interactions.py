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

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cells import make_cell

HEAD_DIM = 32  # channels per layer-attention head (MRLA / DLA)

#: name -> interaction class
INTERACTIONS: dict[str, type["StageInteraction"]] = {}


def register(name: str) -> Callable[[type["StageInteraction"]], type["StageInteraction"]]:
    def add(cls: type[StageInteraction]) -> type[StageInteraction]:
        INTERACTIONS[name] = cls
        cls.name = name
        return cls

    return add


def eca_kernel_size(channels: int) -> int:
    """ECA's adaptive kernel: the odd number nearest above (log2 C + 1) / 2."""
    t = int(abs((math.log2(channels) + 1) / 2))
    return t if t % 2 else t + 1


def gap(x: Tensor) -> Tensor:
    """Global average pool ``[B, C, H, W] -> [B, C]``.

    Written as a scaled sum: in channels-last layout the backward of ``mean`` (and of adaptive
    average pooling) materialises a full map and is ~10x slower than the broadcast of ``sum``.
    """
    return x.sum(dim=(2, 3)) * (1.0 / (x.shape[2] * x.shape[3]))


def as_map(v: Tensor) -> Tensor:
    """``[B, C] -> [B, C, 1, 1]`` so a per-channel vector scales a feature map."""
    return v[:, :, None, None]


class DropPath(nn.Module):
    """Stochastic depth on a residual branch: drop the whole branch per sample while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
        return x * mask.bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ChannelConv(nn.Module):
    """A 1-D convolution across channels of a pooled vector (ECA, MRLA queries and keys)."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, v: Tensor) -> Tensor:  # [B, C] -> [B, C]
        return self.conv(v.unsqueeze(1)).squeeze(1)


def depthwise3x3(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)


def head_scores(q: Tensor, k: Tensor, heads: int) -> Tensor:
    """Per-head scaled dot products ``<q_h, k_h> / sqrt(d)`` of ``[..., B, C]`` tensors -> ``[..., B, heads]``."""
    prod = (q * k).unflatten(-1, (heads, -1))
    return prod.sum(-1) / math.sqrt(prod.shape[-1])


def per_channel(weights: Tensor, channels: int) -> Tensor:
    """Expand per-head weights ``[..., heads]`` to per-channel ``[..., C]``."""
    heads = weights.shape[-1]
    return weights.unsqueeze(-1).expand(*weights.shape, channels // heads).flatten(-2)


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


def refresh_state(state, dsu_state: str):
    """The cell state a refresh call sees. ``per_image``: each image its own (the paper's equations);
    ``first_image``: image 0's row for every image of the batch, broadcast (what the official code's
    refresh does: its DSU reads ``hidden[0][0]`` from ``[B, C]`` states), so an image's output depends
    on the batch it is in. As there: both ``h`` and ``c``, taken after this block's forward-path
    update, not detached (every image's loss reaches image 0's state); checked against the official
    code's logits in ``tests/test_official.py``."""
    if dsu_state == "per_image":
        return state
    if dsu_state == "first_image":
        return tuple(s[:1] for s in state)
    raise ValueError(f"unknown dsu_state {dsu_state!r}; choose per_image or first_image")


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


class LightAttentionBase(LayerAttentionBase):
    """MRLA-light and DLA-light: ``out = y + DropPath(BN(LA(y) + λ ⊙ s))`` after the block's ReLU,
    where ``LA(y)`` is the depthwise value map scaled per head by ``sigmoid(<q, k> / sqrt(d))``.

    Full-map element-wise passes dominate the cost on the CPU, so sums of products are written
    as ``addcmul`` (one pass each) and per-channel constants are folded into small tensors.
    """

    def __init__(self, channels, num_blocks, drop_path: float = 0.0):
        super().__init__(channels, num_blocks, drop_path)
        self.lambdas = nn.ParameterList(nn.Parameter(torch.randn(channels, 1, 1)) for _ in range(num_blocks))

    def head_weights(self, index: int, pooled: Tensor) -> Tensor:
        """``sigmoid(<q_h, k_h> / sqrt(d))`` per head, expanded to a ``[B, C, 1, 1]`` map scale."""
        q, k = self.query[index](pooled), self.key[index](pooled)
        return as_map(per_channel(torch.sigmoid(head_scores(q, k, self.heads)), self.channels))

    def finish(self, index: int, y: Tensor, attended: Tensor) -> Tensor:
        return y + self.drop_path(self.norm[index](attended))


@register("mrla_l")
class MRLALight(LightAttentionBase):
    """MRLA-L (Fang et al.): the previous output enters through ``λ ⊙ shortcut``."""

    def forward(self, index, branch, shortcut, state):
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
        y = F.relu(branch + shortcut)
        pooled = gap(y)
        if state is None:
            state = self.cell.zero_state(pooled)
        _, state = self.cell(pooled, state)  # forward path: context from the block output
        gate, _ = self.cell(gap(shortcut), refresh_state(state, self.dsu_state))  # backward path: new state dropped
        # λ ⊙ (s ⊙ g + DW(s)) = s ⊙ (λ g) + DW_{λW}(s): λ folded into the gate and the conv weights
        lam = self.lambdas[index]
        conv = self.refresh_conv
        refreshed = F.conv2d(shortcut, conv.weight * lam.unsqueeze(1), padding=1, groups=self.channels)
        refreshed = torch.addcmul(refreshed, shortcut, as_map(gate) * lam)
        attended = torch.addcmul(refreshed, self.value[index](y), self.head_weights(index, pooled))
        return self.finish(index, y, attended), state


class BaseAttentionState:
    """What MRLA-B / DLA-B remember within a stage.

    Value maps are kept as produced (``values``); DLA's per-channel refresh gates are accumulated
    in ``value_gates`` instead of being multiplied into fresh copies of every map, so memory stays
    linear in depth. ``keys`` hold the (refreshed) key vectors, ``pooled`` the GAP of each value map.
    """

    def __init__(self):
        self.values: list[Tensor] = []
        self.keys: Tensor | None = None  # [t, B, C]
        self.pooled: Tensor | None = None  # [t, B, C]
        self.value_gates: Tensor | None = None  # [t, B, C] or None while no refresh happened
        self.cell_state = None

    def append(self, key: Tensor, value: Tensor) -> None:
        key, pooled = key.unsqueeze(0), gap(value).unsqueeze(0)
        self.values.append(value)
        if self.keys is None:
            self.keys, self.pooled = key, pooled
            return
        self.keys = torch.cat([self.keys, key])
        self.pooled = torch.cat([self.pooled, pooled])
        if self.value_gates is not None:
            self.value_gates = torch.cat([self.value_gates, torch.ones_like(pooled)])


class BaseAttention(LayerAttentionBase):
    """MRLA-B: softmax attention of the block's query over the keys of every block so far in the
    stage, ``o = Σ_i w_i V_i`` per head; ``out = y + DropPath(ReLU(BN(o)))``."""

    def __init__(self, channels, num_blocks, drop_path: float = 0.0):
        super().__init__(channels, num_blocks, drop_path)
        #: when a list, every block appends its attention scores ``[B, heads, t]`` (Figure 2)
        self.captured: list[Tensor] | None = None

    def begin(self, x):
        return BaseAttentionState()

    def refresh(self, state: BaseAttentionState, pooled_y: Tensor) -> None:
        """Hook for DLA-B; MRLA-B keeps its tokens static."""

    def forward(self, index, branch, shortcut, state: BaseAttentionState):
        y = F.relu(branch + shortcut)
        pooled = gap(y)
        self.refresh(state, pooled)
        state.append(self.key[index](pooled), self.value[index](y))
        query = self.query[index](pooled)
        scores = torch.softmax(head_scores(query, state.keys, self.heads), dim=0)  # [t, B, heads]
        if self.captured is not None:
            self.captured.append(scores.detach().permute(1, 2, 0))
        coeffs = per_channel(scores, self.channels)  # [t, B, C]
        if state.value_gates is not None:
            coeffs = coeffs * state.value_gates
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

    def __init__(self, channels, num_blocks, drop_path: float = 0.0, cell: str = "dsu",
                 sigma: str = "sigmoid", reduction: int = 4, dsu_state: str = "per_image"):
        super().__init__(channels, num_blocks, drop_path)
        self.cell = make_cell(cell, channels, reduction=reduction, sigma=sigma)
        self.dsu_state = dsu_state

    def refresh(self, state: BaseAttentionState, pooled_y: Tensor) -> None:
        if state.cell_state is None:
            state.cell_state = self.cell.zero_state(pooled_y)
        _, state.cell_state = self.cell(pooled_y, state.cell_state)
        if state.keys is None:
            return
        gates_so_far = state.value_gates if state.value_gates is not None else 1.0
        tokens = torch.cat([state.keys, state.pooled * gates_so_far])  # [2t, B, C]
        gates, _ = self.cell(tokens, refresh_state(state.cell_state, self.dsu_state))
        key_gates, value_gates = gates.chunk(2)
        state.keys = state.keys * key_gates
        state.value_gates = value_gates if state.value_gates is None else state.value_gates * value_gates
