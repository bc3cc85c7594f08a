"""The official CIFAR state dicts (tunantu/Dynamic-Layer-Attention, models/cifar/*.py) in our names.

One explicit table per method, written by names: each rule is a pattern over an official key and
the template of our key it becomes. ``{stage}`` is 0-based (official ``layer1..3`` or ``stages.0..2``),
``{block}`` the block within the stage. A key that matches no rule, or more than one, is an error,
and so is a key of ours that nothing maps onto (``load_state_dict(strict=True)`` checks that).

The only change of values: cells whose gates are stacked in another order in the official code
(DIANet's LSTM-like cell: ``i, f, g, o``; ours ``i, f, o, g``) have the rows of their last Linear
reordered by gate name.
"""

from __future__ import annotations

import re
from typing import Callable

import torch

BN = r"(?P<bn>weight|bias|running_mean|running_var|num_batches_tracked)"
BLOCK_PART = r"(?P<part>conv[123]\.weight|bn[123]\.\w+|downsample\.[01]\.\w+)"
LAYER = r"layer(?P<layer>[123])"          # official 1-based stage names (layer1, layer2, layer3)
STAGE = r"stages\.(?P<stage>[012])"       # official 0-based stage names
BLOCK = r"(?P<block>\d+)"
DSU_GATES = {"official": ("i", "f", "g"), "ours": ("i", "f", "g")}
DIA_GATES = {"official": ("i", "f", "g", "o"), "ours": ("i", "f", "o", "g")}

Rule = tuple[str, str, Callable[[str, torch.Tensor], torch.Tensor] | None]


def reorder_gates(order: dict[str, tuple[str, ...]]):
    """Reorder the gate chunks of a cell's last Linear (weight rows or bias) from the official order
    to ours, by gate name; the first Linear (no gates) is left as it is."""

    def apply(ours_key: str, value: torch.Tensor) -> torch.Tensor:
        if not re.search(r"_path\.2\.", ours_key):
            return value
        chunks = dict(zip(order["official"], value.chunk(len(order["official"]), dim=0)))
        return torch.cat([chunks[name] for name in order["ours"]])

    return apply


def common(blocks: str) -> list[Rule]:
    """Stem, head and the bottleneck convolutions; ``blocks`` is where the official file keeps a
    stage's blocks (a pattern with the stage and ``{block}`` groups)."""
    return [
        (r"conv1\.weight", "stem.0.weight", None),
        (rf"bn1\.{BN}", "stem.1.{bn}", None),
        (r"fc\.(?P<p>weight|bias)", "fc.{p}", None),
        (rf"{blocks}\.{BLOCK_PART}", "stages.{stage}.blocks.{block}.{part}", None),
    ]


def cell_rules(owner: str, gates) -> list[Rule]:
    """A stage's recurrent cell: official ``w_ih`` (input path) and ``w_hh`` (hidden path), each a
    one-layer ``seq`` of Linear, ReLU, Linear."""
    layer = r"\.0\.seq\.(?P<i>[02])\.(?P<p>weight|bias)"
    return [(owner + r"\.w_ih" + layer, "stages.{stage}.interaction.cell.input_path.{i}.{p}", reorder_gates(gates)),
            (owner + r"\.w_hh" + layer, "stages.{stage}.interaction.cell.hidden_path.{i}.{p}", reorder_gates(gates))]


def attention_rules(prefix: str, module: str, norm: str, lam: str | None) -> list[Rule]:
    """MRLA/DLA per-block parts: query, key, value convs, the attention BN and, for the light
    forms, λ. ``prefix`` locates the block, ``module`` the layer-attention module inside it."""
    ours = "stages.{stage}.interaction"
    rules: list[Rule] = [
        (rf"{prefix}\.{module}\.Wq\.weight", ours + ".query.{block}.conv.weight", None),
        (rf"{prefix}\.{module}\.Wk\.weight", ours + ".key.{block}.conv.weight", None),
        (rf"{prefix}\.{module}\.Wv\.weight", ours + ".value.{block}.weight", None),
        (rf"{prefix}\.{norm}\.{BN}", ours + ".norm.{block}.{bn}", None),
    ]
    if lam:
        rules.append((rf"{prefix}\.{lam}", ours + ".lambdas.{block}", None))
    return rules


RULES: dict[str, list[Rule]] = {
    # resnet.py: layerN is a Sequential of Bottlenecks
    "none": common(rf"{LAYER}\.{BLOCK}"),
    # senet.py: each Bottleneck has se.fc = Linear, ReLU, Linear, Sigmoid
    "se": common(rf"{LAYER}\.{BLOCK}") + [
        (rf"{LAYER}\.{BLOCK}\.se\.fc\.(?P<i>[02])\.weight", "stages.{stage}.interaction.gates.{block}.{i}.weight", None),
    ],
    # ecanet.py: each Bottleneck has eca.conv (Conv1d over channels)
    "eca": common(rf"{LAYER}\.{BLOCK}") + [
        (rf"{LAYER}\.{BLOCK}\.eca\.conv\.weight", "stages.{stage}.interaction.gates.{block}.conv.weight", None),
    ],
    # dia_resnet.py: layerN = Attention(ModuleList of Bottlenecks) with one LSTM-like cell per stage
    "dia": common(rf"{LAYER}\.ModuleList\.{BLOCK}") + cell_rules(rf"{LAYER}\.lstm", DIA_GATES),
    # mrla_base.py: stages[s][b] = Bottleneck holding mrla.mrla (the layer) and bn_mrla
    "mrla_b": common(rf"{STAGE}\.{BLOCK}") + attention_rules(rf"{STAGE}\.{BLOCK}", r"mrla\.mrla", "bn_mrla", None),
    # mrla_light.py: layerN[b] = Bottleneck holding mrla.mrla, mrla.lambda_t and bn_mrla
    "mrla_l": common(rf"{LAYER}\.{BLOCK}")
    + attention_rules(rf"{LAYER}\.{BLOCK}", r"mrla\.mrla", "bn_mrla", r"mrla\.lambda_t"),
    # dla_b.py: stages[s] = Attention(layers, attention) with the stage's DSU in lstm
    "dla_b": common(rf"{STAGE}\.layers\.{BLOCK}")
    + attention_rules(rf"{STAGE}\.attention\.{BLOCK}", r"layer_attention\.layer_attention", "bn_layer_attention", None)
    + cell_rules(rf"{STAGE}\.lstm", DSU_GATES),
    # dla_l.py: as dla_b, plus λ per block and the stage's depthwise refresh conv (excite)
    "dla_l": common(rf"{STAGE}\.layers\.{BLOCK}")
    + attention_rules(rf"{STAGE}\.attention\.{BLOCK}", r"layer_attention\.layer_attention", "bn_layer_attention",
                      r"layer_attention\.lambda_t")
    + cell_rules(rf"{STAGE}\.lstm", DSU_GATES)
    + [(rf"{STAGE}\.excite\.weight", "stages.{stage}.interaction.refresh_conv.weight", None)],
}


def our_key(arch: str, official_key: str) -> tuple[str, Callable | None]:
    """Our name for ``official_key`` of the official ``arch`` model, and the value change (or None)."""
    found = []
    for pattern, template, change in RULES[arch]:
        match = re.fullmatch(pattern, official_key)
        if match:
            groups = match.groupdict()
            if "layer" in groups:
                groups["stage"] = str(int(groups.pop("layer")) - 1)
            found.append((template.format(**groups), change))
    if len(found) != 1:
        raise KeyError(f"{arch}: official key {official_key!r} matches {len(found)} rules")
    return found[0]


def to_ours(arch: str, official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official state dict of ``arch`` renamed (and, for gate order, reordered) into ours."""
    out = {}
    for key, value in official.items():
        name, change = our_key(arch, key)
        if name in out:
            raise KeyError(f"{arch}: two official keys map onto {name!r}")
        out[name] = change(name, value) if change else value
    return out
