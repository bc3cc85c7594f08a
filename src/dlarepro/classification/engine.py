"""One classification run (CIFAR-10/100, ImageNet), read top to bottom: data, model, the recipe's
SGD schedule, the epoch loop of :class:`dlarepro.runbase.RunBase`, evaluation, metrics.

Besides the common run folder (see :mod:`dlarepro.runbase`), a run of a method that keeps layer
attention scores may save ``attention_stage3.npz`` (Figure 2).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import atomic
from .. import distributed as dist_
from ..checkpoints import seed_everything
from ..data.loading import image_batches
from ..models import build_model
from ..runbase import RunBase, Step, StopSignals, epoch_batches, log
from ..runconfig import model_knobs
from .config import lr_at, resolve

HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5",
                   "epoch_seconds", "step_seconds"]


def make_datasets(config: dict[str, Any]):
    """(train dataset, test dataset, number of classes, synthetic flag) for the run's dataset."""
    from .. import data

    if config["dataset"] == "imagenet":
        train_set, test_set = data.imagenet_datasets(config["data_root"], seed=config["seed"],
                                                     crop_size=config["crop_size"])
        return train_set, test_set, len(train_set.classes), data.imagenet_is_synthetic(config["data_root"])
    root, name = config["data_root"], config["dataset"]
    train_images, train_labels = data.load_cifar(root, name, train=True)
    test_images, test_labels = data.load_cifar(root, name, train=False)
    train_set = data.CifarDataset(train_images, train_labels, train=True, seed=config["seed"])
    test_set = data.CifarDataset(test_images, test_labels, train=False, seed=config["seed"])
    classes = 10 if name == "cifar10" else 100
    return train_set, test_set, classes, data.is_synthetic(root, name)


class ClassificationRun(RunBase):
    """Train ``config`` in ``config['out_dir']``; ``ClassificationRun(config).execute()`` returns the metrics."""

    resolver = staticmethod(resolve)
    history_columns = HISTORY_COLUMNS

    def _execute(self, metrics_path: Path) -> dict[str, Any]:
        c = self.config
        self._select_device()
        train_set, test_set, classes, synthetic = make_datasets(c)  # data errors surface before any work
        self._write_config()

        seed_everything(c["seed"])
        model = build_model(c["arch"], c["depth"], c["dataset"], num_classes=classes, **model_knobs(c))
        self.fmt = torch.channels_last if c["channels_last"] else torch.contiguous_format
        model = model.to(self.device, memory_format=self.fmt)
        # foreach: one multi-tensor op per step instead of one per parameter (on the CPU half the step's
        # optimizer time for DLA-L-56's 311 small parameters); the same arithmetic, bit for bit
        optimizer = torch.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"],
                                    weight_decay=c["weight_decay"], nesterov=c["nesterov"], foreach=True)
        state, trained = self._resume(model, optimizer)
        self.test_set = test_set
        train_data = image_batches(train_set, self.device, self.workers)  # for the whole run: persistent
        self.test_data = image_batches(test_set, self.device, self.workers)

        with StopSignals() as stop:
            started = time.time() - state["elapsed"]
            while state["epoch"] < c["epochs"]:
                epoch = state["epoch"]
                self.lr = lr_at(c, epoch)
                for group in optimizer.param_groups:
                    group["lr"] = self.lr
                batches = epoch_batches(len(train_set), c["batch_size"], c["seed"], epoch, c["max_batches_per_epoch"])
                mine = [dist_.shard(batch, self.world) for batch in batches[state["batch"]:]]
                row = self.run_epoch(trained, optimizer, state, stop, started, train_data.epoch(epoch, mine),
                                     len(batches))
                self.end_epoch(optimizer, state, row, started)
        extra = self._evaluate_at_batch_sizes(c["eval_batch_sizes"])  # every process: evaluation is sharded
        metrics = None
        if self.world.main:
            scores_file = self._capture_attention(model, test_set) if c["capture_attention"] else None
            metrics = {**self._metrics(model, state, synthetic, scores_file), **extra}
        return self.finish(metrics_path, metrics,
                           f"top-1 final {metrics['final_top1']:.2f} / best {metrics['best_top1']:.2f}"
                           if metrics else "")

    # -- one step and one epoch -------------------------------------------------------------
    def train_step(self, model, optimizer, batch, epoch: int, index: int) -> Step:
        x, y = batch  # already on the device (data.loading.image_batches)
        with self.autocast():
            out = model(x.contiguous(memory_format=self.fmt))
            loss = F.cross_entropy(out, y)
        self.optimizer_step(loss, optimizer)
        return Step({"loss": loss.item() * len(y), "correct": int((out.argmax(1) == y).sum()), "seen": len(y)})

    def epoch_row(self, epoch, sums, step_times, seconds, batches) -> dict[str, Any]:
        dist_.sync_buffers(self.model, self.world)  # rank 0's BatchNorm statistics everywhere
        test_loss, top1, top5 = self.evaluate(self.model, self.test_set)
        return {"epoch": epoch + 1, "lr": self.lr, "train_loss": sums["loss"] / sums["seen"],
                "train_top1": 100.0 * sums["correct"] / sums["seen"], "test_loss": test_loss,
                "test_top1": top1, "test_top5": top5, "epoch_seconds": seconds,
                "step_seconds": statistics.median(step_times)}

    # -- evaluation -------------------------------------------------------------------------
    def _test_batches(self, test_set, size: int | None = None) -> list[list[int]]:
        """The test set in order, in batches of ``size`` (default ``test_batch_size``); with several
        processes each batch is evaluated whole by one of them, so batch composition never changes."""
        size = size or self.config["test_batch_size"]
        return [list(range(i, min(i + size, len(test_set)))) for i in range(0, len(test_set), size)]

    @torch.no_grad()
    def evaluate(self, model, test_set, batch_size: int | None = None) -> tuple[float, float, float]:
        """(test loss, top-1 %, top-5 %) with test batches of ``batch_size`` (default the recipe's)."""
        world = self.world
        model.eval()
        loss = top1 = top5 = seen = 0
        for x, y in self.test_data.epoch(0, self._test_batches(test_set, batch_size)[world.rank::world.size]):
            with self.autocast():
                out = model(x.contiguous(memory_format=self.fmt)).float()
            loss += float(F.cross_entropy(out, y, reduction="sum"))
            best5 = out.topk(min(5, out.shape[1]), dim=1).indices
            top1 += int((best5[:, 0] == y).sum())
            top5 += int((best5 == y[:, None]).any(1).sum())
            seen += len(y)
        loss, top1, top5, seen = dist_.all_sum([loss, top1, top5, seen], world)
        return loss / seen, 100.0 * top1 / seen, 100.0 * top5 / seen

    def _evaluate_at_batch_sizes(self, sizes: list[int]) -> dict[str, float]:
        """The final model evaluated again at each extra test batch size: ``final_top1_batch<N>``,
        ``final_top5_batch<N>`` and ``final_test_loss_batch<N>``. A model with ``dsu_state=first_image``
        refreshes every image with the state of the first image of its batch, so its score depends
        on the test batch size (at 1 each image is its own first image)."""
        out: dict[str, float] = {}
        for size in sizes:
            loss, top1, top5 = self.evaluate(self.model, self.test_set, size)
            out.update({f"final_top1_batch{size}": top1, f"final_top5_batch{size}": top5,
                        f"final_test_loss_batch{size}": loss})
            if self.world.main:
                log(f"final model at test batch {size}: top-1 {top1:.2f}")
        return out

    @torch.no_grad()
    def _capture_attention(self, model, test_set) -> str:
        """Stage-3 attention scores over the test set, per block (Figure 2): the mean of each score
        (``block<i>``, ``[heads, t]``; ``scores``: the matrix of means over heads), its std across the
        test images (``std_block<i>``) and the mean entropy of each head's row (``entropy_block<i>``,
        ``[heads]``, nats): how much the attention changes with the input, and how spread it is."""
        stage = model.stages[2].interaction
        totals: list[list[torch.Tensor]] = []  # per block: sums of the scores, of their squares, of row entropies
        stage.captured, seen = [], 0
        try:
            model.eval()
            for x, _ in self.test_data.epoch(0, self._test_batches(test_set)):
                stage.captured.clear()
                model(x.contiguous(memory_format=self.fmt))
                per_block = [[s.sum(0), (s * s).sum(0), -torch.xlogy(s, s).sum(-1).sum(0)]
                             for s in (c.double().cpu() for c in stage.captured)]  # [B, heads, t] each
                totals = per_block if not totals else [[a + b for a, b in zip(t, p)] for t, p in zip(totals, per_block)]
                seen += len(x)
        finally:
            stage.captured = None
        means = [t[0] / seen for t in totals]
        n = len(means)
        matrix = np.full((n, n), np.nan)
        for i, m in enumerate(means):
            matrix[i, : i + 1] = m.mean(0).numpy()
        arrays = {"scores": matrix, **{f"block{i + 1}": m.numpy() for i, m in enumerate(means)}}
        for i, (m, (_, squares, entropy)) in enumerate(zip(means, totals)):
            arrays[f"std_block{i + 1}"] = (squares / seen - m * m).clamp_min(0).sqrt().numpy()
            arrays[f"entropy_block{i + 1}"] = (entropy / seen).numpy()
        path = self.folder / "attention_stage3.npz"
        atomic.write_with(path, lambda fh: np.savez(fh, **arrays))
        return path.name

    # -- results ----------------------------------------------------------------------------
    def _metrics(self, model, state, synthetic: bool, scores_file: str | None) -> dict[str, Any]:
        from ..modelinfo import count_macs

        history = state["history"]
        best = max(history, key=lambda r: r["test_top1"])
        return {
            **self.common_metrics(model, state, synthetic),
            "final_top1": history[-1]["test_top1"], "final_top5": history[-1]["test_top5"],
            "final_test_loss": history[-1]["test_loss"],
            "best_top1": best["test_top1"], "best_top5": best["test_top5"], "best_epoch": best["epoch"],
            "macs": count_macs(model.cpu(), self.config["dataset"]), "attention_scores": scores_file,
        }


def train(config: dict[str, Any], progress: bool | None = None) -> dict[str, Any]:
    """Train one classification run (resuming if its folder has a checkpoint); return its metrics."""
    return ClassificationRun(config, progress).execute()
