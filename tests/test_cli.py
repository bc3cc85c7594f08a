"""The ``dla-repro`` command line, run as a user runs it (a subprocess of the installed script)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from dlarepro import paper


def run(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("dla-repro") or sys.executable
    cmd = [exe, *args] if exe != sys.executable else [exe, "-m", "dlarepro", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_model_info_json_has_exact_params_and_macs():
    out = run("model-info", "--arch", "none", "--depth", "50", "--dataset", "imagenet", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["params"] == 25_557_032
    # The paper's "4.1B FLOPs" for ResNet-50 are multiply-accumulates of convolutions and matmuls.
    assert round(info["macs"] / 1e9, 2) == 4.09


def test_model_info_macs_grow_with_the_method():
    macs = {}
    for arch in ("none", "dla_l"):
        out = run("model-info", "--arch", arch, "--depth", "56", "--dataset", "cifar100", "--json")
        macs[arch] = json.loads(out.stdout)["macs"]
    assert 1.1 < macs["dla_l"] / macs["none"] < 1.25


def test_python_m_is_the_same_command():
    out = subprocess.run([sys.executable, "-m", "dlarepro", "model-info", "--arch", "dla_b", "--depth", "20",
                          "--dataset", "cifar10", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["params"] == 405_230


def test_model_info_table_lists_every_paper_row():
    out = run("model-info", "--table", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    expected = (len(paper.load_table(1)) + len(paper.load_table(4)) + len(paper.load_table(6))
                + int((paper.load_table(2).arch != "").sum()))
    assert len(rows) == expected
    assert {r["status"] for r in rows} <= {"ok", "known"}
    known = [r for r in rows if r["status"] == "known"]
    assert all(r["note"] for r in known)
    assert len(known) == 3  # DLA-L-56 CIFAR-100, Table 4's DSU row, DLA-L-50 ImageNet (see modelinfo)


def test_model_info_table_is_readable_text():
    out = run("model-info", "--table")
    assert out.returncode == 0
    assert "DLA-L-110 (cell=lstm)" in out.stdout and "1,931,436" in out.stdout
    assert "0 mismatches" in out.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--arch", "none", "--depth", "57", "--dataset", "cifar100"], "got 57; nearest valid: 56 or 65"),
        (["--arch", "se", "--depth", "56", "--dataset", "cifar100", "--cell", "dsu"], "se does not take the knob"),
        (["--arch", "dla_l", "--dataset", "cifar100"], "needs --depth"),
        (["--arch", "attn", "--depth", "56", "--dataset", "cifar100"], "invalid choice: 'attn'"),
    ],
)
def test_model_info_bad_input_is_one_clear_line(args, message):
    out = run("model-info", *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_help_lists_every_option():
    out = run("model-info", "--help")
    for option in ("--arch", "--depth", "--dataset", "--cell", "--sigma", "--reduction", "--table", "--json"):
        assert option in out.stdout
