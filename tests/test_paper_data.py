"""The transcribed paper tables: columns, shapes, dtypes, spot checks against the paper text."""

from __future__ import annotations

import math

import pytest

from dlarepro import paper
from dlarepro.paper import COLUMNS, TABLES, load_table


def one(df, **match):
    for key, value in match.items():
        df = df[df[key] == value]
    assert len(df) == 1, match
    return df.iloc[0]


@pytest.mark.parametrize("number", TABLES)
def test_every_table_loads_with_its_columns(number):
    df = load_table(number)
    assert tuple(df.columns) == COLUMNS[number]
    assert len(df) > 0
    assert df["row"].dtype.kind == "i" and df["depth"].dtype.kind == "i"
    for col in df.columns:
        if col in ("arch", "label", "cell", "sigma", "dataset", "detector"):
            assert all(isinstance(v, str) for v in df[col]), col
        elif col not in ("row", "depth"):
            assert df[col].dtype.kind == "f", col
    assert (df["label"] != "").all()


def test_table1_shape_and_models():
    df = load_table(1)
    assert len(df) == 40
    assert df.groupby("dataset").size().to_dict() == {"cifar10": 20, "cifar100": 20}
    archs = ["none", "se", "eca", "dia", "mrla_l", "dla_l"]
    expected = {(a, d) for a in archs for d in (20, 56, 110)} | {("mrla_b", 20), ("dla_b", 20)}
    for _, sub in df.groupby("dataset"):
        pairs = list(zip(sub.arch, sub.depth))
        assert len(set(pairs)) == 20 and set(pairs) == expected
        assert list(sub.row) == list(range(1, 21))
    assert not df[["params_m", "top1_mean", "top1_std"]].isna().any().any()


def test_table1_values():
    df = load_table(1)
    r = one(df, arch="dla_l", depth=110, dataset="cifar100")
    assert (r.label, r.params_m, r.top1_mean, r.top1_std) == ("DLA-L (ours)", 1.41, 76.41, 0.36)
    r = one(df, arch="none", depth=20, dataset="cifar10")
    assert (r.label, r.params_m, r.top1_mean, r.top1_std) == ("ResNet-20", 0.22, 91.64, 0.18)
    r = one(df, arch="dla_l", depth=56, dataset="cifar100")
    assert r.params_m == 0.82  # as printed; the official code has 0.83 M
    assert one(df, arch="dla_b", depth=20, dataset="cifar10").top1_std == 0.10


def test_table2_values():
    df = load_table(2)
    assert len(df) == 19
    r = one(df, label="ResNet-50")
    assert (r.arch, r.depth, r.params_m, r.flops_g, r.top1, r.top5) == ("none", 50, 25.6, 4.1, 76.1, 92.9)
    r = one(df, label="DLA-L (ours)", depth=101)
    assert (r.arch, r.params_m, r.flops_g, r.top1, r.top5) == ("dla_l", 47.8, 8.1, 78.9, 94.5)
    dianet = one(df, label="DIANet")
    assert dianet.arch == "" and math.isnan(dianet.flops_g) and math.isnan(dianet.top5) and dianet.top1 == 77.2
    assert set(df.arch) == {"", "none", "se", "eca", "mrla_l", "dla_l"}
    assert set(df[df.arch == ""].label) == {"CBAM", "A2", "AA", "GC", "DIANet", "RLAg"}


def test_table3_values():
    df = load_table(3)
    assert df.groupby("detector").size().to_dict() == {"faster_rcnn": 13, "mask_rcnn": 17}
    r = one(df, detector="mask_rcnn", depth=101, arch="dla_l")
    assert (r.params_m, r.ap, r.ap50, r.ap75) == (66.1, 42.9, 63.8, 46.7)
    r = one(df, detector="faster_rcnn", depth=50, arch="none")
    assert (r.params_m, r.ap, r.aps, r.apm, r.apl) == (41.5, 36.4, 21.8, 40.0, 46.2)
    assert set(df[df.arch == ""].label) == {"BA", "NL", "GC", "RLAg"}


def test_ablation_tables():
    t1 = load_table(1)
    t4 = load_table(4)
    assert list(t4.cell) == ["rnn", "lstm", "dia", "dsu"]
    assert list(t4.label) == ["Original RNN", "LSTM", "DIA", "DSU"]
    dsu = one(t4, cell="dsu")
    dla110 = one(t1, arch="dla_l", depth=110, dataset="cifar100")
    assert (dsu.top1_mean, dsu.top1_std) == (dla110.top1_mean, dla110.top1_std) == (76.41, 0.36)

    t5 = load_table(5)
    assert len(t5) == 8 and set(t5.depth) == {56, 110}
    assert one(t5, depth=56, sigma="sigmoid").top1_mean == 75.46
    assert one(t5, depth=110, sigma="identity").top1_mean == 75.37

    t6 = load_table(6)
    assert len(t6) == 8
    assert list(t6[t6.arch == "none"].label) == ["ResNet-56", "ResNet-110"]
    assert set(t6[t6.arch == "none"].cell) == {""}
    r = one(t6, arch="dia", depth=56, cell="dsu")
    assert (r.label, r.params_m, r.top1_mean, r.top1_std) == ("LII (DSU)", 0.79, 74.23, 0.22)


def test_unknown_table_number():
    with pytest.raises(ValueError, match="unknown paper table 7"):
        load_table(7)


def test_bad_columns_are_reported(monkeypatch):
    monkeypatch.setitem(paper.COLUMNS, 4, COLUMNS[4][:-1] + ("top1_sd",))
    with pytest.raises(ValueError, match=r"table4\.csv.*missing \['top1_sd'\].*unexpected \['top1_std'\]"):
        load_table(4)
