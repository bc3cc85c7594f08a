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
    assert imagenet == sorted(f"imagenet-{a}-d{d}-s0" for a in ("none", "se", "eca", "mrla_l", "dla_l-dsu_state_first_image")
                              for d in (50, 101))
    coco = [r for r in runs.values() if r.dataset == "coco"]
    assert len(coco) == 2 * 2 * 5
    assert "coco-mask_rcnn-dla_l-dsu_state_first_image-d101-s0" in runs


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
    assert runs["imagenet-dla_l-dsu_state_first_image-d50-s0"].experiments == {"table2", "table3"}


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
    cifar = gridlib.run_record(GRID, "cifar100-dla_l-dsu_state_first_image-d20-s0", "smoke", workdir="/w").config
    assert cifar["batch_size"] == GRID["profiles"]["smoke"]["overrides"]["batch_size"]
    paper_imagenet = gridlib.run_record(GRID, "imagenet-dla_l-dsu_state_first_image-d101-s0", "paper",
                                        workdir="/w").config
    assert paper_imagenet["depth"] == 101 and paper_imagenet["batch_size"] == 256  # the recipe's own
    assert paper_imagenet["reduction"] == 16 and paper_imagenet["cell"] == "dsu"  # every default filled in


@pytest.mark.parametrize("change, message", [
    (lambda g: g["experiments"]["table3"][0].pop("detectors"), "'detectors' is required for coco"),
    (lambda g: g["experiments"]["table1"][0].update(detectors=["faster_rcnn"]), "only for coco"),
    (lambda g: g["experiments"]["table2"][0].update(depths=[56]), "ImageNet depth must be one of [50, 101]"),
    (lambda g: g["experiments"]["table3"][0].update(depths=[34]), "ImageNet depth must be one of [50, 101]"),
    (lambda g: g["profiles"]["smoke"].update(skip_experiments=["table9"]), "unknown experiments ['table9']"),
    (lambda g: g["profiles"]["paper"].update(knobs={"dsu_sate": "first_image"}), "'dsu_sate' is not one of"),
    (lambda g: g["profiles"]["paper"].update(knobs={"dsu_state": "last_image"}),
     "profiles/paper/knobs/dsu_state: dla_b: dsu_state='last_image' is not one of ['per_image', 'first_image']"),
    (lambda g: g["profiles"]["smoke"]["overrides"].update(eval_batch_sizes=[1]), "['eval_batch_sizes'] say which run"),
    (lambda g: g["experiments"]["table3"][0].update(eval_batch_sizes=[1]), "eval_batch_sizes applies to classification"),
    (lambda g: g["experiments"]["batch_coupling"][1].update(eval_batch_sizes=[0]), "0 is less than the minimum of 1"),
    (lambda g: g["experiments"]["table1"][0].update(dsu_state=["first_image"]), "none does not take the knob 'dsu_state'"),
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


def test_profile_knobs_reach_every_method_that_takes_them_unless_the_group_lists_them():
    """In the paper profile every DLA run trains the official refresh (first_image), which produced
    the published numbers, except the batch-coupling runs that ask for per_image themselves."""
    runs = gridlib.expand(GRID, "paper")
    for run in runs.values():
        state = run.knob_dict.get("dsu_state")
        if run.arch not in ("dla_b", "dla_l"):
            assert state is None, run.run_id
        elif state is None:  # the method's default, per_image: only where a group lists it
            assert run.experiments == {"batch_coupling"}, run.run_id
        else:
            assert state == "first_image", run.run_id
    record = gridlib.run_record(GRID, "cifar10-dla_b-dsu_state_first_image-d20-s0", "paper", workdir="/w")
    assert record.config["dsu_state"] == "first_image" and record.identity.knobs == (("dsu_state", "first_image"),)
    assert gridlib.run_record(GRID, "cifar10-mrla_b-d20-s0", "paper", workdir="/w").config["dsu_state"] is None
    paper = GRID["profiles"]["paper"]
    assert gridlib.profile_knobs(paper, "dla_l") == {"dsu_state": "first_image"}
    assert gridlib.profile_knobs(paper, "mrla_l") == {} and gridlib.profile_knobs(paper, "dla_l", ["dsu_state"]) == {}
    grid = copy.deepcopy(GRID)
    del grid["profiles"]["paper"]["knobs"]
    assert "cifar10-dla_b-d20-s0" in gridlib.expand(grid, "paper")


def test_batch_coupling_experiment():
    runs = gridlib.runs_of(GRID, "batch_coupling", "paper")
    assert len(runs) == 2 * 2 * 2 * 5  # DLA-B/L x depths 56/110 x both states x five seeds
    assert {(r.dataset, r.arch, r.depth, r.knob_dict.get("dsu_state", "per_image")) for r in runs} == {
        ("cifar100", a, d, s) for a in ("dla_b", "dla_l") for d in (56, 110) for s in ("per_image", "first_image")}
    for run in runs:
        config = gridlib.run_record(GRID, run.run_id, "paper", workdir="/w").config
        first = config["dsu_state"] == "first_image"
        assert config["eval_batch_sizes"] == ([1, 100] if first else []), run.run_id
        assert config["test_batch_size"] == 100  # the recipe's test batch, which final_top1 uses
    shared = gridlib.expand(GRID, "paper")
    assert {"table1", "figure4", "table5", "batch_coupling"} <= shared["cifar100-dla_l-dsu_state_first_image-d56-s0"].experiments
    figure2 = shared["cifar100-dla_b-dsu_state_first_image-d56-s0"]  # one node: captured and evaluated twice
    assert figure2.experiments == {"figure2", "batch_coupling"} and figure2.capture_attention
    assert figure2.eval_batch_sizes == {1, 100}
    smoke = gridlib.runs_of(GRID, "batch_coupling", "smoke")
    assert len(smoke) == 2 * 2 * 2 * 2 and {r.depth for r in smoke} == {20, 29}


def test_a_run_shared_by_groups_gets_every_eval_batch_size():
    grid = copy.deepcopy(GRID)
    grid["experiments"]["table1"][1]["eval_batch_sizes"] = [7]
    config = gridlib.run_record(grid, "cifar100-dla_l-dsu_state_first_image-d56-s0", "paper", workdir="/w").config
    assert config["eval_batch_sizes"] == [1, 7, 100]
    assert gridlib.run_record(grid, "cifar100-none-d56-s0", "paper", workdir="/w").config["eval_batch_sizes"] == [7]
