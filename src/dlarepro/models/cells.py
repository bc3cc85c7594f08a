"""Recurrent cells shared by the blocks of one stage (DIA / LII and DLA).

Every cell maps an input vector ``x`` (``[..., B, C]``) and a state ``(h, c)`` (each ``[B, C]``) to
``(h', (h', c'))``. ``h'`` is what the caller uses as a per-channel gate; the state is fed back.
Leading dimensions of ``x`` beyond the batch broadcast against the state, so DLA's backward path
can refresh every earlier layer of a stage in one call (the hidden path is computed once).
A step is the cell's two paths, ``input_path(x)`` and ``hidden_path(h)``, then its gate arithmetic
(``step``): DLA computes each state's hidden path once and hands it to every call that reads that
state (a block's refresh, the next block's context), and the native tails run the DSU's gate
arithmetic in C++ (:func:`.native_vectors.cell_step`).

Parameter counts (per stage, C channels), as the paper's tables imply:

=========  ==========================  =======================================
cell       parameters (reduction r)    output h'
=========  ==========================  =======================================
``dsu``    8C²/r + 2C/r + 6C           σ(c'), σ = sigmoid by default (r=4: 2C² + 6.5C)
``dia``    10C²/r + 2C/r + 8C          o · sigmoid(c') (r=4: 2.5C² + 8.5C)
``lstm``   8C² + 8C                    o · tanh(c')
``rnn``    2C² + 2C                    tanh(W_x x + W_h h)
=========  ==========================  =======================================
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

State = tuple[Tensor, Tensor]

#: Normalisations of the DSU's state, Table 5 of the DLA paper ("the σ on c^{m-1}").
SIGMAS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid,
    "identity": lambda t: t,
    "tanh": torch.tanh,
    "relu": torch.relu,
}


def _bottleneck_mlp(channels: int, reduction: int, out_gates: int) -> nn.Sequential:
    """Linear(C, C/r) -> ReLU -> Linear(C/r, gates·C), both with bias (DIA and DSU paths)."""
    hidden = channels // reduction
    if hidden < 1:
        raise ValueError(f"reduction {reduction} leaves no hidden units for {channels} channels")
    return nn.Sequential(
        nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_gates * channels)
    )


class RecurrentCell(nn.Module):
    """Base class: a state initialised to zeros at the start of every stage and forward pass;
    subclasses define ``input_path``, ``hidden_path`` and :meth:`step`."""

    input_path: nn.Module
    hidden_path: nn.Module

    def zero_state(self, like: Tensor) -> State:
        zeros = like.new_zeros(like.shape[-2:])
        return zeros, zeros

    def step(self, from_input: Tensor, from_hidden: Tensor, state: State) -> tuple[Tensor, State]:
        """The gate arithmetic after the paths: ``input_path(x)``, ``hidden_path(h)`` and ``state``'s ``c``."""
        raise NotImplementedError

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self.step(self.input_path(x), self.hidden_path(state[0]), state)


class DSUCell(RecurrentCell):
    """Dynamic Sharing Unit (DLA paper, Eq. 7-9): an LSTM without output gate.

    Input path and hidden path are each a reduction MLP; their sum gives the input gate, forget gate
    and candidate. ``h' = sigma(c')`` is both the refresh gate and the state fed back (which is how
    the paper's "normalise c^{m-1} with σ before the input transform" is realised).
    """

    def __init__(self, channels: int, reduction: int = 4, sigma: str = "sigmoid"):
        super().__init__()
        if sigma not in SIGMAS:
            raise ValueError(f"unknown sigma {sigma!r}; choose one of {sorted(SIGMAS)}")
        self.sigma_name = sigma
        self.sigma = SIGMAS[sigma]
        self.input_path = _bottleneck_mlp(channels, reduction, 3)
        self.hidden_path = _bottleneck_mlp(channels, reduction, 3)

    def step(self, from_input, from_hidden, state):
        i, f, g = (from_input + from_hidden).chunk(3, dim=-1)
        c_new = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
        h_new = self.sigma(c_new)
        return h_new, (h_new, c_new)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma_name}"


class DIACell(RecurrentCell):
    """DIANet's modified LSTM: reduction MLPs on both paths, ``h' = o · sigmoid(c')``."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.input_path = _bottleneck_mlp(channels, reduction, 4)
        self.hidden_path = _bottleneck_mlp(channels, reduction, 4)

    def step(self, from_input, from_hidden, state):
        i, f, o, g = (from_input + from_hidden).chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.sigmoid(c_new)
        return h_new, (h_new, c_new)


class LSTMCell(RecurrentCell):
    """A full LSTM cell (C×4C input and hidden matrices), written out so inputs can broadcast."""

    def __init__(self, channels: int):
        super().__init__()
        self.input_path = nn.Linear(channels, 4 * channels)
        self.hidden_path = nn.Linear(channels, 4 * channels)

    def step(self, from_input, from_hidden, state):
        i, f, o, g = (from_input + from_hidden).chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return h_new, (h_new, c_new)


class RNNCell(RecurrentCell):
    """The original (Elman) RNN cell: ``h' = tanh(W_x x + b_x + W_h h + b_h)``; c is unused."""

    def __init__(self, channels: int):
        super().__init__()
        self.input_path = nn.Linear(channels, channels)
        self.hidden_path = nn.Linear(channels, channels)

    def step(self, from_input, from_hidden, state):
        h_new = torch.tanh(from_input + from_hidden)
        return h_new, (h_new, state[1])


def refresh_state(state: State, dsu_state: str) -> State:
    """The cell state a refresh call sees. ``per_image``: each image its own (the paper's equations);
    ``first_image``: image 0's row for every image of the batch, broadcast (what the official code's
    refresh does: its DSU reads ``hidden[0][0]`` from ``[B, C]`` states), so an image's output depends
    on the batch it is in. As there: both ``h`` and ``c``, taken after this block's forward-path
    update, not detached (every image's loss reaches image 0's state); checked against the official
    code's logits in ``tests/test_official.py``."""
    return tuple(refresh_rows(s, dsu_state) for s in state)


def refresh_rows(t: Tensor, dsu_state: str) -> Tensor:
    """The rows of ``t`` (``[B, ...]``, a state or its hidden path) that a refresh reads (:func:`refresh_state`)."""
    if dsu_state == "per_image":
        return t
    if dsu_state == "first_image":
        return t[:1]
    raise ValueError(f"unknown dsu_state {dsu_state!r}; choose per_image or first_image")


CELLS = ("dsu", "dia", "lstm", "rnn")


def make_cell(name: str, channels: int, *, reduction: int = 4, sigma: str = "sigmoid") -> RecurrentCell:
    """Build a cell by name; ``sigma`` applies to the DSU only (callers validate that)."""
    if name == "dsu":
        return DSUCell(channels, reduction, sigma)
    if name == "dia":
        return DIACell(channels, reduction)
    if name == "lstm":
        return LSTMCell(channels)
    if name == "rnn":
        return RNNCell(channels)
    raise ValueError(f"unknown recurrent cell {name!r}; choose one of {list(CELLS)}")
