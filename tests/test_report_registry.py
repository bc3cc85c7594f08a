"""The registry of tables and figures, and how paper rows find their runs.

- every module of ``dlarepro.reports.tables`` / ``.figures`` is one table / figure, and adding one
  is one module: the file lists, ``paper.tex`` and the writers follow;
- the Snakemake rules and the DVC stage take their files from the registry;
- a paper row maps onto the planned run that trains its model even when the runs carry a knob the
  paper never varies (``dsu_state``, which appears in run ids).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
import yaml

from conftest import ENV, REPO, canned_counts, snakemake_command
from dlarepro.reports import aggregate as agg
from dlarepro.reports import paper_tex, registry, tablekit, verdicts
from dlarepro.reports.context import Context
from dlarepro.reports.rows import paper_rows
from dlarepro.reports.tables import __path__ as TABLES_PATH

EXTRA_TABLE = '''
"""A table added by a test: the runs per dataset (no paper CSV needed: it is not the paper's)."""
import pandas as pd

from dlarepro.reports.latex import Table, cell_frame
from dlarepro.reports.registry import TableSpec


def build(b):
    counts = b.summary.groupby("dataset").n_seeds.sum()
    records = [((name,), {("", "Runs"): str(int(n))}) for name, n in counts.items()]
    cells = cell_frame(records, [("", "Runs")], "Dataset")
    return Table(TABLE.name, cells, pd.DataFrame(False, index=cells.index, columns=cells.columns),
                 "Finished runs per dataset.", "lr")


TABLE = TableSpec("runcount", 10, "ablations", build)
'''


@pytest.fixture()
def extra_table(tmp_path, monkeypatch):
    """One more module in the tables package (found through the package's search path)."""
    folder = tmp_path / "more_tables"
    folder.mkdir()
    (folder / "runcount.py").write_text(textwrap.dedent(EXTRA_TABLE))
    monkeypatch.setattr(sys.modules["dlarepro.reports.tables"], "__path__", [*TABLES_PATH, str(folder)])
    registry.refresh()
    yield
    sys.modules.pop("dlarepro.reports.tables.runcount", None)
    monkeypatch.undo()
    registry.refresh()


def test_the_registry_lists_every_module_in_paper_order():
    assert list(registry.tables()) == ["table1", "table2", "table3", "table4", "table5", "table6", "coupling",
                                       "claims", "params"]
    assert list(registry.figures()) == ["figure4", "figure2", "cost"]
    assert registry.aggregate_files() == ["runs.csv", "summary.csv", "comparisons.csv", "problems.csv", "figure4.csv"]
    assert registry.claims_files() == ["claims.csv", "headline.json"]
    sections = "".join(paper_tex.sections())
    order = [m.group(1) for m in re.finditer(r"\\section\{([^}]*)\}", sections)]
    assert order == [s.title for s in registry.SECTIONS]
    assert sections.index("{tables/table1}") < sections.index("{figures/figure4.pdf}") < sections.index("{tables/table2}")
    assert "\\setcounter{figure}{4}\n\\begin{figure}[H]\n\\centering\n\\includegraphics[width=\\linewidth]{figures/cost" \
        in sections


def test_adding_a_table_is_one_module(extra_table, tmp_path):
    assert "runcount.tex" in registry.table_files() and registry.tables()["runcount"].section == "ablations"
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    ctx = Context.load(tmp_path / "params.yaml", "smoke", tmp_path)
    frames = verdicts.write_claims(ctx, echo=lambda s: None, frames=agg.aggregate(ctx, echo=lambda s: None))
    written = tablekit.write_tables(ctx, counts=canned_counts(), echo=lambda s: None, frames=frames)
    assert ctx.reports_dir / "tables" / "runcount.tex" in written
    assert "Finished runs per dataset." in (ctx.reports_dir / "tables" / "runcount.tex").read_text()
    tex = paper_tex.paper_tex(ctx, frames)
    ablations = tex.split("\\section{Ablations}")[1].split("\\section")[0]
    assert ablations.index("{tables/table6}") < ablations.index("\\setcounter{table}{9}\n\\input{tables/runcount}")


def test_a_module_without_its_declaration_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "broken.py").write_text("X = 1\n")
    monkeypatch.setattr(sys.modules["dlarepro.reports.tables"], "__path__", [*TABLES_PATH, str(tmp_path)])
    registry.refresh()
    try:
        with pytest.raises(registry.RegistryError, match="dlarepro.reports.tables.broken declares no TABLE"):
            registry.tables()
    finally:
        sys.modules.pop("dlarepro.reports.tables.broken", None)
        monkeypatch.undo()
        registry.refresh()


def test_snakemake_and_dvc_take_the_report_files_from_the_registry(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    done = subprocess.run(snakemake_command(tmp_path, "-n", "-F", "claims", "tables", "figures", profile="local"),
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    outputs = dict(re.findall(r"^rule (\w+):\n(?:    .*\n)*?    output: (.*)$", done.stdout, re.M))
    assert outputs["aggregate"].split(", ") == [f"results/smoke/{f}" for f in registry.aggregate_files()]
    assert outputs["claims"].split(", ") == [f"results/smoke/{f}" for f in registry.claims_files()]
    assert outputs["tables"].split(", ") == [f"reports/smoke/tables/{f}" for f in registry.table_files()]
    assert outputs["figures"].split(", ") == [f"reports/smoke/figures/{f}" for f in registry.figure_files()]

    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["report"]
    declared = {next(iter(o)) if isinstance(o, dict) else o for key in ("outs", "metrics", "plots")
                for o in stage.get(key, [])}
    assert {f"results/${{profile}}/{f}" for f in registry.aggregate_files() + registry.claims_files()} <= declared
    assert {"reports/${profile}/tables", "reports/${profile}/figures"} <= declared  # the folders: any new file
    assert {"src/dlarepro/reports", "src/dlarepro/claims", "src/dlarepro/resources/paper"} <= set(stage["deps"])


DSU_GRID = {   # every DLA run trained with a knob no paper table varies (it shows in the run ids)
    "table1": [{"datasets": ["cifar100"], "depths": [20], "archs": ["none", "mrla_l"]},
               {"datasets": ["cifar100"], "depths": [20], "archs": ["dla_l"], "dsu_state": ["first_image"]}],
    "table4": [{"datasets": ["cifar100"], "depths": [110], "archs": ["dla_l"], "cell": ["lstm", "dsu"],
                "dsu_state": ["first_image"]}],
    "table5": [{"datasets": ["cifar100"], "depths": [110], "archs": ["dla_l"], "sigma": ["tanh", "sigmoid"],
                "dsu_state": ["first_image"]}],
    "figure4": [{"datasets": ["cifar100"], "depths": [20], "archs": ["none"]},
                {"datasets": ["cifar100"], "depths": [20], "archs": ["dla_l"], "dsu_state": ["first_image"]}],
}


def test_paper_rows_map_to_runs_with_extra_knobs(tmp_path):
    grid = yaml.safe_load((REPO / "params.yaml").read_text())
    grid["experiments"] = DSU_GRID
    grid["profiles"]["smoke"].pop("skip_experiments")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(grid))
    ctx = Context.load(tmp_path / "params.yaml", "smoke", tmp_path)
    rows = paper_rows(ctx).set_index(["table", "dataset", "label", "paper_depth"]).config_id
    assert rows[(1, "cifar100", "DLA-L (ours)", 20)] == "cifar100-dla_l-dsu_state_first_image-d11"
    assert rows[(1, "cifar100", "ResNet-20", 20)] == "cifar100-none-d11"
    assert rows[(1, "cifar10", "ResNet-20", 20)] == ""                        # no run trains these models
    assert rows[(4, "cifar100", "LSTM", 110)] == "cifar100-dla_l-cell_lstm-dsu_state_first_image-d29"
    dsu = rows[(4, "cifar100", "DSU", 110)]
    assert dsu == rows[(5, "cifar100", "Sigmoid", 110)] == "cifar100-dla_l-dsu_state_first_image-d29"
    assert rows[(5, "cifar100", "Tanh", 110)] == "cifar100-dla_l-dsu_state_first_image-sigma_tanh-d29"
    assert rows[(4, "cifar100", "DIA", 110)] == "" and rows[(1, "cifar100", "SE", 20)] == ""
    summary = agg.summarise(ctx, agg.collect(ctx)[0]).set_index("config_id")
    assert summary.loc["cifar100-dla_l-dsu_state_first_image-d29", "paper_label"] == "DLA-L (ours)"
    assert summary.loc["cifar100-dla_l-dsu_state_first_image-d11", "baseline"] == "cifar100-none-d11"
    plain = {c.config_id for c in ctx.index.plain("figure4")}
    assert plain == {"cifar100-none-d11", "cifar100-dla_l-dsu_state_first_image-d11"}
