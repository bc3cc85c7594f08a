"""The declared grid (params.yaml) expanded into runs: counts per experiment, shared nodes, the
ImageNet -> COCO dependency, per-family profile settings, and errors that name the bad value."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from dlarepro import grid as gridlib
from dlarepro.prepare import DataNotAvailable, prepare_data

REPO = Path(__file__).resolve().parents[1]
GRID = gridlib.load(REPO / "params.yaml")


def test_paper_profile_holds_every_table():
    runs = gridlib.expand(GRID, "paper")
    cifar = [r for r in runs.values() if r.dataset in gridlib.CIFAR]
    assert len(cifar) >= 265
    assert len(gridlib.runs_of(GRID, "table1", "paper")) == 20 * 2 * 5
    imagenet = sorted(r.run_id for r in runs.values() if r.dataset == "imagenet")
    assert imagenet == sorted(f"imagenet-{a}-d{d}-s0" for a in ("none", "se", "eca", "mrla_l", "dla_l")
                              for d in (50, 101))
    coco = [r for r in runs.values() if r.dataset == "coco"]
    assert len(coco) == 2 * 2 * 5
    assert "coco-mask_rcnn-dla_l-d101-s0" in runs


def test_every_detection_run_depends_on_its_imagenet_run():
    runs = gridlib.expand(GRID, "paper")
    for run in (r for r in runs.values() if r.dataset == "coco"):
        backbone = run.backbone
        assert backbone.run_id in runs, run.run_id
        assert (backbone.arch, backbone.depth, backbone.knobs) == (run.arch, run.depth, run.knobs)
        config = gridlib.run_record(GRID, run.run_id, "paper", workdir="/w").config
        assert config["pretrained"] == f"/w/results/paper/runs/{backbone.run_id}"
        assert config["detector"] == run.detector and config["recipe"] == "coco"
    # a backbone listed by table2 too is one node serving both tables
    assert runs["imagenet-dla_l-d50-s0"].experiments == {"table2", "table3"}


def test_a_backbone_no_experiment_lists_is_added():
    grid = copy.deepcopy(GRID)
    del grid["experiments"]["table2"]
    runs = gridlib.expand(grid, "paper")
    assert runs["imagenet-se-d101-s0"].experiments == frozenset({"table3"})


def test_smoke_skips_imagenet_and_coco_and_tiny_runs_only_them():
    smoke = gridlib.expand(GRID, "smoke")
    assert {r.dataset for r in smoke.values()} == {"cifar10", "cifar100"}
    assert "table2: skipped by this profile" in gridlib.summary(GRID, "smoke")
    tiny = gridlib.expand(GRID, "tiny")
    assert {r.dataset for r in tiny.values()} == {"imagenet", "coco"}


def test_family_settings_do_not_leak_between_families():
    tiny = GRID["profiles"]["tiny"]
    imagenet = gridlib.run_record(GRID, "imagenet-none-d50-s0", "tiny", workdir="/w").config
    assert imagenet["recipe"] == "imagenet" and imagenet["data_root"] == "/w/data/tiny/imagenet"
    assert {k: imagenet[k] for k in tiny["imagenet"]["overrides"]} == tiny["imagenet"]["overrides"]
    coco = gridlib.run_record(GRID, "coco-faster_rcnn-none-d50-s0", "tiny", workdir="/w").config
    assert coco["data_root"] == "/w/data/tiny" and "crop_size" not in coco
    cifar = gridlib.run_record(GRID, "cifar100-dla_l-d20-s0", "smoke", workdir="/w").config
    assert cifar["batch_size"] == GRID["profiles"]["smoke"]["overrides"]["batch_size"]
    paper_imagenet = gridlib.run_record(GRID, "imagenet-dla_l-d101-s0", "paper", workdir="/w").config
    assert paper_imagenet["depth"] == 101 and paper_imagenet["batch_size"] == 256  # the recipe's own
    assert paper_imagenet["reduction"] == 16 and paper_imagenet["cell"] == "dsu"  # every default filled in


@pytest.mark.parametrize("change, message", [
    (lambda g: g["experiments"]["table3"][0].pop("detectors"), "'detectors' is required for coco"),
    (lambda g: g["experiments"]["table1"][0].update(detectors=["faster_rcnn"]), "only for coco"),
    (lambda g: g["experiments"]["table2"][0].update(depths=[56]), "ImageNet depth must be one of [50, 101]"),
    (lambda g: g["experiments"]["table3"][0].update(depths=[34]), "ImageNet depth must be one of [50, 101]"),
    (lambda g: g["profiles"]["smoke"].update(skip_experiments=["table9"]), "unknown experiments ['table9']"),
])
def test_bad_grid_names_the_problem(change, message):
    grid = copy.deepcopy(GRID)
    change(grid)
    with pytest.raises(gridlib.GridError, match=None) as err:
        gridlib.validate(grid)
        for name in grid["profiles"]:
            gridlib.expand(grid, name)
    assert message in str(err.value)


def test_schema_rejects_unknown_detector_and_family_key():
    grid = copy.deepcopy(GRID)
    grid["experiments"]["table3"][0]["detectors"] = ["retinanet"]
    with pytest.raises(gridlib.GridError, match="retinanet"):
        gridlib.validate(grid)
    grid = copy.deepcopy(GRID)
    grid["profiles"]["tiny"]["imagenet"]["seeds"] = [3]
    with pytest.raises(gridlib.GridError, match="seeds"):
        gridlib.validate(grid)


def test_real_imagenet_and_coco_are_not_invented(tmp_path):
    with pytest.raises(DataNotAvailable, match=r"data/paper/imagenet/train"):
        prepare_data(GRID, "paper", workdir=tmp_path, datasets=["imagenet"])
    with pytest.raises(DataNotAvailable, match=r"annotations/instances_\{train,val\}2017.json"):
        prepare_data(GRID, "paper", workdir=tmp_path, datasets=["coco"])
    with pytest.raises(gridlib.GridError, match="not used by the 'smoke' profile"):
        prepare_data(GRID, "smoke", workdir=tmp_path, datasets=["coco"])
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.json"))
