"""Adding a ninth method is one interaction class plus one spec: nothing else is edited.

The test registers a tiny method at runtime (``@register`` and ``register_method``), drives it
through every entry point in this process (``dla-repro model-info``, the grid and its plan,
``dla-repro submit`` training one epoch on generated data, ``dla-repro report aggregate``,
``tables`` and ``figures``) and checks that it appears in the summary, in the cost figure's legend
and in Figure 4's data. Both registrations are removed afterwards.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from conftest import canned_counts
from dlarepro import grid as gridlib
from dlarepro import layout
from dlarepro.cli import main as cli_main
from dlarepro.data import write_synthetic_cifar
from dlarepro.methods import METHODS, MethodSpec, register_method
from dlarepro.models.interactions import INTERACTIONS, StageInteraction, register
from dlarepro.reports import figurekit, tablekit
from dlarepro.reports.aggregate import read_outputs
from dlarepro.reports.context import Context

NAME, DISPLAY = "scaled", "Scaled-Shortcut"
PROFILE = "ninth"
GRID = {
    "profile": PROFILE,
    "profiles": {PROFILE: {"recipe": "smoke", "seeds": [0], "data": "synthetic",
                           "synthetic_size": {"n_train": 128, "n_test": 50}, "depth_map": {20: 11},
                           "overrides": {"epochs": 1, "milestones": [], "max_batches_per_epoch": 1,
                                         "batch_size": 16, "threads": 1}}},
    "experiments": {"figure4": [{"datasets": ["cifar100"], "depths": [20], "archs": ["none", NAME]}]},
}


@pytest.fixture()
def ninth_method():
    """One class with ``@register`` and one spec: the whole of a new method."""

    @register(NAME)
    class ScaledShortcut(StageInteraction):
        """ReLU(branch + a * shortcut) with one learnable a per block."""

        def __init__(self, channels: int, num_blocks: int, **knobs):
            super().__init__(channels, num_blocks)
            self.scale = nn.Parameter(torch.ones(num_blocks))

        def forward(self, index, branch, shortcut, state):
            return F.relu(branch + self.scale[index] * shortcut), state

    register_method(MethodSpec(NAME, DISPLAY, "#8c564b"))
    yield
    METHODS.pop(NAME, None)
    INTERACTIONS.pop(NAME, None)


def test_a_ninth_method_goes_through_every_entry_point(ninth_method, tmp_path, capsys, monkeypatch):
    # model-info: ResNet-20 on CIFAR-100 (243,508 parameters) plus one scale per block (3 stages x 2)
    assert cli_main(["model-info", "--arch", NAME, "--depth", "20", "--dataset", "cifar100", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 243_508 + 6 and info["macs"] > 0

    # the grid: an experiment listing it expands, plans and lists it
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(GRID))
    plan = gridlib.plan(gridlib.load(tmp_path / "params.yaml"), PROFILE, workdir=tmp_path)
    assert sorted(plan) == ["cifar100-none-d11-s0", f"cifar100-{NAME}-d11-s0"]
    assert cli_main(["grid", "list", "--grid", str(tmp_path / "params.yaml")]) == 0
    assert f"cifar100-{NAME}-d11-s0" in capsys.readouterr().out.split()

    # one epoch on generated data, submitted as the workflow submits a planned run (in this process)
    write_synthetic_cifar(tmp_path / layout.data_root(PROFILE), "cifar100", n_train=128, n_test=50, seed=0)
    for record in plan.values():
        assert cli_main(["submit", "--record", json.dumps(record.to_dict()), "--executor", "debug"]) == 0
    ours, plain = (json.loads((tmp_path / layout.run_dir(PROFILE, run_id) / "metrics.json").read_text())
                   for run_id in (f"cifar100-{NAME}-d11-s0", "cifar100-none-d11-s0"))
    assert ours["run_id"] == f"cifar100-{NAME}-d11-s0" and ours["params"] == plain["params"] + 3  # one block a stage

    # the reports, step by step as the workflow runs them
    monkeypatch.setattr(tablekit, "DEFAULT_COUNTS", canned_counts())
    for action in ("aggregate", "claims", "tables", "figures"):
        assert cli_main(["report", action, "--grid", str(tmp_path / "params.yaml"), "--root", str(tmp_path)]) == 0
    ctx = Context.load(tmp_path / "params.yaml", PROFILE, tmp_path)
    frames = read_outputs(ctx)
    row = frames.summary.set_index("config_id").loc[f"cifar100-{NAME}-d11"]
    assert (row.method, row.n_seeds, row.baseline) == (DISPLAY, 1, "cifar100-none-d11")
    figure4 = frames.data["figure4.csv"]
    assert list(zip(figure4.method, figure4.depth, figure4.trained_depth)) == [("ResNet", 20, 11), (DISPLAY, 20, 11)]
    for figure in ("cost", "figure4"):
        legend = [t.get_text() for t in figurekit.draw(ctx, frames, figure).legends[0].get_texts()]
        assert DISPLAY in legend, (figure, legend)
    assert (ctx.reports_dir / "figures" / "cost.pdf").is_file()

    # a method whose spec is gone (runs of an older checkout) is still drawn, under its registry name
    METHODS.pop(NAME)
    for figure in ("cost", "figure4"):
        legend = [t.get_text() for t in figurekit.draw(ctx, frames, figure).legends[0].get_texts()]
        assert NAME in legend, (figure, legend)
