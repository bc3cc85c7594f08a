"""One COCO detection run, end to end: data, detector, the 1x schedule, checkpoints, COCO AP.

The run folder follows the contract of every run: ``run.yaml``, ``config.yaml``,
``history.csv`` (one row per epoch), ``checkpoint.pt`` (+ ``checkpoint.prev.pt``), and last
``metrics.json`` (see :mod:`dlarepro.runbase`, whose epoch loop, checkpoints and resume it uses).
Image order and flips are functions of (seed, epoch, index), so a resumed run ends bit-identical.
Several processes (one per GPU) split each global batch and the validation images; rank 0 writes
files and runs pycocotools' COCOeval.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed as dist_
from ..checkpoints import seed_everything
from ..data.loading import EpochLoader
from ..runbase import RunBase, Step, StopSignals, epoch_batches
from ..runconfig import model_knobs
from .config import lr_at, resolve
from .model import build_detector, pretrained_state

HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "iterations", "epoch_seconds", "step_seconds"]
COCO_STATS = ("ap", "ap50", "ap75", "aps", "apm", "apl")


def coco_results(outputs: list[dict[str, torch.Tensor]], image_ids: list[int], category_ids: list[int],
                 masks: bool) -> list[dict[str, Any]]:
    """torchvision detections -> COCO result entries (xywh boxes, original category ids, RLE masks)."""
    from pycocotools import mask as mask_utils

    results = []
    for out, image_id in zip(outputs, image_ids):
        boxes = out["boxes"].detach().cpu().numpy().astype(np.float64)
        scores, labels = out["scores"].detach().cpu().tolist(), out["labels"].detach().cpu().tolist()
        rles = []
        if masks:
            binary = (out["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8)
            rles = [mask_utils.encode(np.asfortranarray(m)) for m in binary]
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            entry = {"image_id": int(image_id), "category_id": category_ids[labels[i] - 1],
                     "bbox": [round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2),
                              round(float(y2 - y1), 2)], "score": round(float(scores[i]), 5)}
            if masks:
                rle = rles[i]
                entry["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            results.append(entry)
    return results


def coco_average_precision(coco_gt, results: list[dict[str, Any]], kind: str, image_ids: list[int]) -> dict[str, Any]:
    """COCOeval's six AP figures for ``kind`` (bbox or segm), in percent; null where COCO has no
    ground truth of that size (COCOeval's -1); 0 when nothing was detected."""
    from pycocotools.cocoeval import COCOeval

    keys = [f"{kind}_{s}" for s in COCO_STATS]
    if not results:
        return dict.fromkeys(keys, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, kind)
        evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {k: (None if v < 0 else round(100.0 * float(v), 4)) for k, v in zip(keys, evaluator.stats[:6])}


class DetectionRun(RunBase):
    """Train ``config`` in ``config['out_dir']``; ``DetectionRun(config).execute()`` returns the metrics."""

    resolver = staticmethod(resolve)
    history_columns = HISTORY_COLUMNS
    unit = "iteration"
    loss_denominator = "iters"

    # -- set-up -----------------------------------------------------------------------------
    def _datasets(self):
        from ..data.coco import CocoDetection, coco_is_synthetic

        c, masks = self.config, self.config["detector"] == "mask_rcnn"
        train_set = CocoDetection(c["data_root"], "train", train=True, seed=c["seed"], masks=masks)
        val_set = CocoDetection(c["data_root"], "val", train=False, seed=c["seed"], masks=masks)
        if train_set.category_ids != val_set.category_ids:
            raise ValueError(f"{c['data_root']}: train and val annotations list different categories")
        if not len(train_set):
            raise ValueError(f"{c['data_root']}: no training image has an annotated object")
        return train_set, val_set, coco_is_synthetic(c["data_root"])

    def _execute(self, metrics_path: Path) -> dict[str, Any]:
        from ..data.coco import collate

        c = self.config
        self._select_device()
        train_set, val_set, synthetic = self._datasets()  # data and weight errors surface before any work
        backbone_state, backbone = (pretrained_state(c["pretrained"], c["arch"], c["depth"]) if c["pretrained"]
                                    else (None, {"path": None}))
        self._write_config()

        seed_everything(c["seed"])
        model = build_detector(c["detector"], c["arch"], c["depth"], train_set.num_classes, min_size=c["min_size"],
                               max_size=c["max_size"], trainable_stages=c["trainable_stages"],
                               pretrained=backbone_state, **model_knobs(c)).to(self.device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=lr_at(c, 0, 0), momentum=c["momentum"],
                                    weight_decay=c["weight_decay"], foreach=True)  # as the classification engine
        state, trained = self._resume(model, optimizer)
        self.per_epoch = len(epoch_batches(len(train_set), c["batch_size"], c["seed"], 0, c["max_iters_per_epoch"]))
        pin = self.device.type == "cuda"
        train_data = EpochLoader(train_set, self.workers, pin, collate_fn=collate)  # persistent for the run
        self.val_data = EpochLoader(val_set, self.workers, pin, collate_fn=collate)

        with StopSignals() as stop:
            started = time.time() - state["elapsed"]
            while state["epoch"] < c["epochs"]:
                epoch = state["epoch"]
                batches = epoch_batches(len(train_set), c["batch_size"], c["seed"], epoch, c["max_iters_per_epoch"])
                mine = [dist_.shard(batch, self.world) for batch in batches[state["batch"]:]]
                self.lr = lr_at(c, epoch, epoch * self.per_epoch + state["batch"])
                row = self.run_epoch(trained, optimizer, state, stop, started, train_data.epoch(epoch, mine),
                                     len(batches))
                self.end_epoch(optimizer, state, row, started)
        scores = self.evaluate(model, val_set)
        metrics = self._metrics(model, state, synthetic, scores, backbone) if self.world.main else None
        return self.finish(metrics_path, metrics,
                           f"box AP {metrics['bbox_ap']:.2f}" + (f", mask AP {metrics['segm_ap']:.2f}"
                                                                 if "segm_ap" in metrics else "") if metrics else "")

    # -- one iteration and one epoch --------------------------------------------------------
    def train_step(self, model, optimizer, batch, epoch: int, index: int) -> Step:
        images, targets = batch
        self.lr = lr_at(self.config, epoch, epoch * self.per_epoch + index)
        for group in optimizer.param_groups:
            group["lr"] = self.lr
        images = [img.to(self.device, non_blocking=True) for img in images]
        targets = [{k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
                   for t in targets]
        with self.autocast():
            losses = model(images, targets)
            loss = sum(losses.values())
        self.optimizer_step(loss, optimizer)
        detail = f"lr {self.lr:.4g}, " + ", ".join(f"{k} {float(v):.3f}" for k, v in losses.items())
        return Step({"loss": float(loss.detach()), "iters": 1.0}, detail)

    def epoch_row(self, epoch, sums, step_times, seconds, batches) -> dict[str, Any]:
        return {"epoch": epoch + 1, "lr": self.lr, "train_loss": sums.get("loss", 0.0) / max(sums.get("iters", 1.0), 1.0),
                "iterations": batches, "epoch_seconds": seconds,
                "step_seconds": statistics.median(step_times) if step_times else 0.0}

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, val_set) -> dict[str, Any]:
        """COCO AP on the validation images (rank r takes every r-th batch); rank 0 scores them."""
        c, world, masks = self.config, self.world, self.config["detector"] == "mask_rcnn"
        n = min(len(val_set), c["max_val_images"] or len(val_set))
        size = c["test_batch_size"]
        batches = [list(range(i, min(i + size, n))) for i in range(0, n, size)][world.rank::world.size]
        model.eval()
        results: list[dict[str, Any]] = []
        for images, targets in self.val_data.epoch(0, batches):
            with self.autocast():
                outputs = model([img.to(self.device, non_blocking=True) for img in images])
            outputs = [{k: (v.float() if v.is_floating_point() else v) for k, v in o.items()} for o in outputs]
            results += coco_results(outputs, [t["image_id"] for t in targets], val_set.category_ids, masks)
        if world.distributed:
            results = [r for part in dist_.all_gather_objects(results, world) for r in part]
        if not world.main:
            return {}
        image_ids = val_set.ids[:n]
        scores = coco_average_precision(val_set.coco, results, "bbox", image_ids)
        if masks:
            scores.update(coco_average_precision(val_set.coco, results, "segm", image_ids))
        scores.update(val_images=n, detections=len(results))
        return scores

    def _metrics(self, model, state, synthetic: bool, scores: dict[str, Any], backbone: dict[str, Any]):
        c, history = self.config, state["history"]
        return {
            **self.common_metrics(model, state, bool(synthetic or backbone.get("synthetic"))),
            **scores, "final_train_loss": history[-1]["train_loss"],
            "iterations": sum(r["iterations"] for r in history),
            "lr": c["lr"] * c["batch_size"] / c["lr_reference_batch"], "backbone": backbone,
        }


def train_detection(config: dict[str, Any], progress: bool | None = None) -> dict[str, Any]:
    """Train one detection run (resuming if its folder has a checkpoint); return its metrics."""
    return DetectionRun(config, progress).execute()
