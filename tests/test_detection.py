"""COCO detection (Table 3): the COCO-format data, the detectors, their ImageNet weights, a run
end to end (COCO AP from pycocotools) and its resume after a stop signal."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import ENV, REPO, snakemake_command, training_command
from dlarepro.checkpoints import CHECKPOINT_FORMAT, read_checkpoint, save_checkpoint
from dlarepro.data.common import CorruptDatasetError, DatasetNotFoundError
from dlarepro.data.coco import CocoDetection, load_coco_api, synthetic_coco_info, write_synthetic_coco
from dlarepro.detection.config import resolve
from dlarepro.detection.model import PretrainedWeightsError, build_detector, pretrained_state
from dlarepro.models import build_model
from dlarepro.runconfig import ConfigError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_synthetic_coco(root, n_train=4, n_val=2, image_size=64)
    return root


# --------------------------------------------------------------------------------------------
# data


def test_synthetic_coco_is_a_real_coco_file_with_masks(coco_root):
    api = load_coco_api(coco_root, "train")
    assert sorted(api.getCatIds()) == [1, 3, 7]  # non-contiguous ids, as in COCO
    assert len(api.imgs) == 4 and api.anns
    assert synthetic_coco_info(coco_root)["n_train"] == "4"
    data = CocoDetection(coco_root, "train", train=False, masks=True)
    image, target = data[0]
    assert image.shape == (3, 64, 64) and 0 <= float(image.min()) and float(image.max()) <= 1
    boxes, masks = target["boxes"], target["masks"]
    assert len(boxes) == len(target["labels"]) == len(masks) >= 1
    assert set(target["labels"].tolist()) <= {1, 2, 3} and data.num_classes == 4
    for box, mask in zip(boxes, masks):  # each box encloses its polygon's mask
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1 and ys.min() >= box[1] - 1 and ys.max() <= box[3] + 1


def test_training_flips_depend_on_seed_epoch_and_index_alone(coco_root):
    first = CocoDetection(coco_root, "train", train=True, seed=5, masks=True)
    again = CocoDetection(coco_root, "train", train=True, seed=5, masks=True)
    plain = CocoDetection(coco_root, "train", train=False, masks=True)
    flipped_any = False
    for epoch in range(4):
        first.set_epoch(epoch), again.set_epoch(epoch)
        for i in range(len(first)):
            (a, ta), (b, tb), (p, tp) = first[i], again[i], plain[i]
            assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])
            if not torch.equal(a, p):
                flipped_any = True
                assert torch.equal(a, p.flip(-1)) and torch.equal(ta["masks"], tp["masks"].flip(-1))
                assert torch.allclose(ta["boxes"][:, 0], 64 - tp["boxes"][:, 2])
    assert flipped_any


def test_missing_and_corrupt_annotations_are_named(tmp_path, coco_root):
    with pytest.raises(DatasetNotFoundError, match="instances_train2017.json"):
        load_coco_api(tmp_path, "train")
    bad = tmp_path / "bad"
    write_synthetic_coco(bad, n_train=1, n_val=1, image_size=64)
    (bad / "coco/annotations/instances_val2017.json").write_text('{"images": [}')
    with pytest.raises(CorruptDatasetError, match="instances_val2017.json"):
        load_coco_api(bad, "val")


def test_real_coco_is_never_overwritten(tmp_path):
    (tmp_path / "coco/annotations").mkdir(parents=True)
    (tmp_path / "coco/annotations/instances_train2017.json").write_text("{}")
    with pytest.raises(OSError, match="SYNTHETIC"):
        write_synthetic_coco(tmp_path, n_train=1, n_val=1, image_size=64)
    assert (tmp_path / "coco/annotations/instances_train2017.json").read_text() == "{}"


# --------------------------------------------------------------------------------------------
# detectors


def test_faster_rcnn_on_our_resnet50_matches_torchvision_parameter_for_parameter():
    from torchvision.models import resnet50
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d

    for detector, family in (("faster_rcnn", FasterRCNN), ("mask_rcnn", MaskRCNN)):
        ours = build_detector(detector, "none", 50, 81)
        theirs = family(_resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3), num_classes=81)
        for count in (lambda m: sum(p.numel() for p in m.parameters()),
                      lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)):
            assert count(ours) == count(theirs), detector


def test_layer_attention_backbone_is_frozen_where_the_official_setup_freezes_it():
    from torchvision.ops import FrozenBatchNorm2d

    model = build_detector("mask_rcnn", "dla_l", 50, 4)
    body = model.backbone
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in body.stages[2].interaction.modules())
    assert not any(p.requires_grad for p in body.stem.parameters())
    assert not any(p.requires_grad for p in body.stages[0].parameters())
    assert all(p.requires_grad for p in body.stages[3].parameters())
    plain = sum(p.numel() for p in build_detector("mask_rcnn", "none", 50, 4).parameters())
    assert sum(p.numel() for p in model.parameters()) > plain  # the DLA modules are there


def imagenet_run(folder: Path, arch: str = "none", depth: int = 50, **metrics) -> dict[str, torch.Tensor]:
    """A finished ImageNet run folder as a classification run leaves it (checkpoint + metrics.json)."""
    torch.manual_seed(1)
    model = build_model(arch, depth, "imagenet", num_classes=4)
    folder.mkdir(parents=True)
    save_checkpoint(folder, {"format": CHECKPOINT_FORMAT, "digest": "x", "epoch": 1, "batch": 0,
                             "model": model.state_dict(), "optimizer": {}, "rng": {}, "history": [],
                             "partial": None, "elapsed": 1.0})
    record = {"run": {"dataset": "imagenet", "arch": arch, "depth": depth}, "synthetic": True,
              "weights_sha256": "abc", **metrics}
    (folder / "metrics.json").write_text(json.dumps(record))
    return model.state_dict()


def test_backbone_starts_from_the_imagenet_run(tmp_path):
    weights = imagenet_run(tmp_path / "imagenet-none-d50-s0")
    state, info = pretrained_state(tmp_path / "imagenet-none-d50-s0", "none", 50)
    assert not any(k.startswith("fc.") for k in state) and info["synthetic"] is True
    model = build_detector("faster_rcnn", "none", 50, 4, pretrained=state)
    backbone = model.backbone.state_dict()
    for key in ("stem.0.weight", "stages.3.blocks.2.conv3.weight", "stages.1.blocks.0.bn1.running_var"):
        assert torch.equal(backbone[key], weights[key]), key


def test_unusable_imagenet_weights_are_refused_with_the_reason(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        pretrained_state(tmp_path / "nothing", "none", 50)
    imagenet_run(tmp_path / "other", arch="se")
    with pytest.raises(PretrainedWeightsError, match="imagenet/se-50, not imagenet/none-50"):
        pretrained_state(tmp_path / "other", "none", 50)
    imagenet_run(tmp_path / "unfinished")
    (tmp_path / "unfinished/metrics.json").unlink()
    with pytest.raises(PretrainedWeightsError, match="has not finished"):
        pretrained_state(tmp_path / "unfinished", "none", 50)
    imagenet_run(tmp_path / "corrupt")
    checkpoint = tmp_path / "corrupt/checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(PretrainedWeightsError, match="cannot be read"):
        pretrained_state(tmp_path / "corrupt", "none", 50)


def test_submission_is_refused_while_the_backbone_run_is_unusable(tmp_path):
    from dlarepro.submit import SubmitError, check_backbone

    def config(folder):
        return {"detector": "faster_rcnn", "arch": "none", "depth": 50, "pretrained": str(folder)}

    with pytest.raises(SubmitError, match="missing does not exist.*upstream job"):
        check_backbone(config(tmp_path / "missing"))
    imagenet_run(tmp_path / "running")
    (tmp_path / "running/metrics.json").unlink()
    with pytest.raises(SubmitError, match="has not finished"):
        check_backbone(config(tmp_path / "running"))
    imagenet_run(tmp_path / "se", arch="se")
    with pytest.raises(SubmitError, match="imagenet/se-50, not imagenet/none-50"):
        check_backbone(config(tmp_path / "se"))
    imagenet_run(tmp_path / "done")
    check_backbone(config(tmp_path / "done"))  # a finished run of the right model is accepted
    check_backbone({**config(tmp_path), "pretrained": None})  # no backbone: random initialisation


def test_bad_detection_config_names_every_problem(tmp_path):
    with pytest.raises(ConfigError) as err:
        resolve({"detector": "retinanet", "arch": "dla_l", "depth": 50, "data_root": "d", "out_dir": "o",
                 "min_sise": 600})
    text = str(err.value)
    assert "detector='retinanet'" in text and "unknown key 'min_sise' (did you mean 'min_size'?)" in text
    with pytest.raises(ConfigError, match="depth"):
        resolve({"detector": "faster_rcnn", "arch": "dla_l", "depth": 56, "data_root": "d", "out_dir": "o"})
    config = resolve({"detector": "mask_rcnn", "arch": "dla_l", "depth": 101, "data_root": "d", "out_dir": "o"})
    assert (config["epochs"], config["milestones"], config["min_size"], config["max_size"]) == (12, [8, 11], 800, 1333)


# --------------------------------------------------------------------------------------------
# a run, end to end


def tiny_run(coco_root: Path, out: Path, pretrained: Path | None = None) -> dict:
    """Two epochs of two iterations on 64-pixel images: about a minute on a CPU core."""
    config = {"detector": "mask_rcnn", "arch": "none", "depth": 50, "data_root": str(coco_root),
              "out_dir": str(out), "epochs": 2, "milestones": [1], "batch_size": 2, "min_size": 64,
              "max_size": 64, "warmup_iters": 2, "threads": 1, "seed": 1, "log_every": 1}
    if pretrained:
        config["pretrained"] = str(pretrained)
    return config


def cli(config: dict) -> list[str]:
    return training_command("detect", config)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("imagenet") / "imagenet-none-d50-s0"
    imagenet_run(folder)
    return folder


@pytest.fixture(scope="module")
def reference(coco_root, backbone, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference") / "run"
    done = subprocess.run(cli(tiny_run(coco_root, out, backbone)), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((out / "metrics.json").read_text())


def test_run_writes_coco_average_precision(reference, coco_root):
    for kind in ("bbox", "segm"):
        for stat in ("ap", "ap50", "ap75", "aps", "apm", "apl"):
            value = reference[f"{kind}_{stat}"]
            assert value is None or 0.0 <= value <= 100.0, (kind, stat, value)
        assert reference[f"{kind}_ap"] is not None
    assert reference["run"] == {"run_id": "coco-mask_rcnn-none-d50-s1", "config_id": "coco-mask_rcnn-none-d50",
                                "dataset": "coco", "detector": "mask_rcnn", "arch": "none", "depth": 50,
                                "paper_depth": 50, "seed": 1, "knobs": {}, "experiments": [], "profile": None,
                                "backbone": None, "recipe": "coco"}
    assert reference["run_id"] == "coco-mask_rcnn-none-d50-s1"
    assert reference["synthetic"] is True and reference["backbone"]["synthetic"] is True
    assert reference["epochs"] == 2 and reference["iterations"] == 4 and reference["val_images"] == 2
    assert reference["params"] == sum(p.numel() for p in build_detector("mask_rcnn", "none", 50, 4).parameters())


def test_stopped_run_resumes_bit_identical(coco_root, backbone, reference, tmp_path):
    out = tmp_path / "run"
    config = tiny_run(coco_root, out, backbone)
    proc = subprocess.Popen(cli(config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, deadline = [], time.time() + 600
    for line in proc.stdout:
        seen.append(line)
        if "epoch 2 iteration 1/2" in line:
            proc.send_signal(signal.SIGTERM)
            break
        assert time.time() < deadline, "".join(seen)
    rest, _ = proc.communicate(timeout=600)
    assert proc.returncode == 3, "".join(seen) + rest
    assert read_checkpoint(out / "checkpoint.pt")["batch"] >= 1  # inside epoch 2
    assert not (out / "metrics.json").exists()
    resumed = subprocess.run(cli(config), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from" in resumed.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["attempts"] == 2
    assert metrics["weights_sha256"] == reference["weights_sha256"]
    assert metrics["bbox_ap"] == reference["bbox_ap"] and metrics["segm_ap"] == reference["segm_ap"]


def test_detect_cli_rejects_a_missing_backbone_before_any_work(coco_root, tmp_path):
    config = tiny_run(coco_root, tmp_path / "run", tmp_path / "no-such-run")
    done = subprocess.run(cli(config), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "pretrained backbone not found: " in done.stderr and "no-such-run does not exist" in done.stderr
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# Tables 2 and 3 through the real workflow


def test_tiny_profile_runs_imagenet_then_coco_and_builds_tables_2_and_3(tmp_path):
    """Snakemake (local executor) on a one-row Table 2 / Table 3 grid of the tiny profile: the
    detector waits for its ImageNet backbone, both tables show our numbers, the paper compiles."""
    import yaml

    grid = yaml.safe_load((REPO / "params.yaml").read_text())
    grid["profile"] = "tiny"
    grid["experiments"]["table2"] = [{"datasets": ["imagenet"], "depths": [50], "archs": ["none"]}]
    grid["experiments"]["table3"] = [{"datasets": ["coco"], "detectors": ["faster_rcnn"], "depths": [50],
                                      "archs": ["none"]}]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    done = subprocess.run(snakemake_command(tmp_path, "paper_pdf", profile="local"), capture_output=True, text=True,
                          timeout=1200, env=ENV)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = tmp_path / "results/tiny/runs"
    imagenet = json.loads((runs / "imagenet-none-d50-s0/metrics.json").read_text())
    coco = json.loads((runs / "coco-faster_rcnn-none-d50-s0/metrics.json").read_text())
    assert coco["backbone"]["weights_sha256"] == imagenet["weights_sha256"]  # started from that run
    assert coco["synthetic"] is True and coco["bbox_ap"] is not None
    table2 = (tmp_path / "reports/tiny/tables/table2.tex").read_text()
    table3 = (tmp_path / "reports/tiny/tables/table3.tex").read_text()
    row2 = next(line for line in table2.splitlines() if "& ResNet-50 &" in line)
    assert f"& {imagenet['final_top1']:.1f} &" in row2
    row3 = next(line for line in table3.splitlines() if "Faster R-CNN" in line and "ResNet-50" in line)
    cells = [c.strip() for c in row3.split("&")]
    assert cells[4:7] == [f"{coco['bbox_ap']:.1f}", f"{coco['bbox_ap50']:.1f}", f"{coco['bbox_ap75']:.1f}"]
    assert "Synthetic data" in table2 and "Synthetic data" in table3
    assert (tmp_path / "reports/tiny/paper.pdf").stat().st_size > 10_000
    headline = json.loads((tmp_path / "results/tiny/headline.json").read_text())
    assert (headline.pop("runs_finished"), headline.pop("runs_expected")) == (2, 2)
    assert headline["not_run"] == sum(headline.values()) > 0           # claims per verdict: none rests on one row
