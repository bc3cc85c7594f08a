"""One training run, end to end: data, model, the recipe's SGD schedule, checkpoints, metrics.

The run folder holds ``config.yaml`` (resolved), ``history.csv`` (one row per epoch),
``checkpoint.pt`` (+ ``checkpoint.prev.pt``), optionally ``attention_stage3.npz``, and last,
``metrics.json``: a folder with ``metrics.json`` is a finished run, one without it is not.

Determinism: the data order and augmentation of every epoch are functions of (seed, epoch, index)
and the checkpoint carries every RNG and the position inside the epoch, so a run killed anywhere
and restarted ends with bit-identical weights (CPU, same thread count). SIGTERM and SIGUSR2 (SLURM's
warnings before a time limit or preemption) save a checkpoint at the next batch boundary and raise
``Interrupted``.

Several processes (one per GPU, ``dlarepro.distributed``): every process takes an equal share of
each global batch (``batch_size`` is the global batch), gradients are averaged by
DistributedDataParallel, the processes agree at every batch on whether to stop, and only rank 0
writes files. A run resumes only with the number of processes it was started with.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from . import __version__, io
from . import distributed as dist_
from .config import lr_at, model_knobs, resolve
from .models import build_model
from .models.interactions import BaseAttention

CHECKPOINT, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"
HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5",
                   "epoch_seconds", "step_seconds"]
CHECKPOINT_FORMAT = 1
COUNT_COLUMNS = ("epoch", "iterations")  # history.csv columns written as integers
#: config keys that do not change what is computed (a run may resume with other values)
NON_SEMANTIC = ("out_dir", "data_root", "num_workers", "log_every", "device", "capture_attention")


class Interrupted(Exception):
    """A stop signal arrived; a checkpoint was written. Run the same config again to resume."""

    def __init__(self, signum: int, checkpoint: Path):
        super().__init__(f"stopped by {signal.Signals(signum).name}; resume from {checkpoint}")
        self.signum, self.checkpoint = signum, checkpoint


class CorruptCheckpointError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# small helpers


def log(message: str) -> None:
    print(f"[dla-repro {time.strftime('%H:%M:%S')}] {message}", flush=True)


def config_digest(config: dict[str, Any]) -> str:
    semantic = {k: v for k, v in sorted(config.items()) if k not in NON_SEMANTIC}
    if config.get("dataset") != "imagenet":
        semantic.pop("crop_size", None)  # ImageNet only: CIFAR checkpoints from before it still resume
    return hashlib.sha256(json.dumps(semantic, sort_keys=True).encode()).hexdigest()[:16]


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} requested but CUDA is not available on this machine")
    return torch.device(name)


class StopSignals:
    """Turn SIGTERM / SIGUSR2 into a flag checked at safe points (main thread only)."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, limit: int | None) -> list[list[int]]:
    """The shuffled batches of one epoch: a function of (seed, epoch) alone."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    return batches[:limit] if limit else batches


# --------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(folder: Path, payload: dict[str, Any]) -> Path:
    """Write atomically, keeping the previous checkpoint as a fallback."""
    path, tmp = folder / CHECKPOINT, folder / f".{CHECKPOINT}.new"
    io.torch_save(payload, tmp)
    if path.exists():
        os.replace(path, folder / PREVIOUS)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, wrong types: all mean "unusable"
        raise CorruptCheckpointError(f"{path}: cannot be read ({type(err).__name__}: {str(err)[:200]})") from None
    required = {"format", "digest", "epoch", "batch", "model", "optimizer", "rng", "history", "partial", "elapsed"}
    if not isinstance(payload, dict) or not required <= set(payload):
        missing = sorted(required - set(payload)) if isinstance(payload, dict) else "everything"
        raise CorruptCheckpointError(f"{path}: not a dla-repro checkpoint (missing {missing})")
    return payload


def find_resume_point(folder: Path, digest: str) -> tuple[dict[str, Any] | None, str]:
    """The newest readable checkpoint of this run and a sentence saying what was chosen."""
    notes = []
    for name in (CHECKPOINT, PREVIOUS):
        path = folder / name
        if not path.exists():
            continue
        try:
            payload = read_checkpoint(path)
        except CorruptCheckpointError as err:
            notes.append(f"corrupt checkpoint ignored: {err}")
            continue
        if payload["digest"] != digest:
            raise RuntimeError(
                f"{path} belongs to a different configuration (digest {payload['digest']} != {digest}); "
                f"use another out_dir or delete the folder to start over"
            )
        where = f"epoch {payload['epoch'] + 1}, batch {payload['batch']}"
        notes.append(f"resuming from {path} ({where})" + (" — the previous good one" if name == PREVIOUS else ""))
        return payload, "; ".join(notes)
    notes.append("no usable checkpoint: starting from scratch" if notes else "starting from scratch")
    return None, "; ".join(notes)


# --------------------------------------------------------------------------------------------
# data


def make_datasets(config: dict[str, Any]):
    """(train dataset, test dataset, number of classes, synthetic flag) for the run's dataset."""
    from . import data

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


def loader(dataset, batches: list[list[int]], config: dict[str, Any], seed: int):
    # A private generator keeps the DataLoader from drawing on the global RNG (which resumes exactly).
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=config["num_workers"],
                                       generator=torch.Generator().manual_seed(seed),
                                       persistent_workers=False)


# --------------------------------------------------------------------------------------------
# the run


class RunBase:
    """What every kind of run shares: the run folder contract, device and process set-up, resuming
    from a checkpoint, DDP, progress, checkpoints at a stop signal. A subclass names its config
    ``resolver`` and implements ``_execute(metrics_path)``."""

    resolver = staticmethod(resolve)

    def __init__(self, config: dict[str, Any], progress: bool | None = None):
        self.config = self.resolver(config)
        self.folder = Path(self.config["out_dir"])
        self.digest = config_digest(self.config)
        self.progress = sys.stderr.isatty() if progress is None else progress

    # -- entry ------------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        metrics_path = self.folder / "metrics.json"
        if metrics_path.exists():
            log(f"{self.folder}: already finished (metrics.json exists); nothing to do")
            return json.loads(metrics_path.read_text())
        c = self.config
        if c["threads"]:
            torch.set_num_threads(c["threads"])
        self.world = dist_.setup(c["device"])
        try:
            return self._execute(metrics_path)
        finally:
            dist_.teardown(self.world)

    def _execute(self, metrics_path: Path) -> dict[str, Any]:
        raise NotImplementedError

    # -- set-up -----------------------------------------------------------------------------
    def _select_device(self) -> None:
        c, world = self.config, self.world
        if c["batch_size"] % world.size:
            raise ValueError(f"batch_size={c['batch_size']} (the global batch) is not divisible by the "
                             f"{world.size} processes of this job")
        self.device = select_device(c["device"])
        if world.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", torch.cuda.current_device())

    def _write_config(self) -> None:
        if self.world.main:
            self.folder.mkdir(parents=True, exist_ok=True)
            io.write_text(self.folder / "config.yaml", yaml.safe_dump(self.config, sort_keys=True))

    def _resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], torch.nn.Module]:
        """Load the newest usable checkpoint into ``model`` and ``optimizer``; return the run state
        and the module training steps go through (DDP around ``model`` with several processes)."""
        world = self.world
        state = {"epoch": 0, "batch": 0, "history": [], "partial": None, "elapsed": 0.0, "attempts": 0}
        payload, note = find_resume_point(self.folder, self.digest)
        if world.main:
            log(f"{self.folder}: {note}")
        if payload is not None and payload.get("world_size", 1) != world.size:
            raise RuntimeError(f"{self.folder}: the checkpoint was written by {payload.get('world_size', 1)} "
                               f"process(es) and this job has {world.size}; resume with the same number of "
                               f"processes (GPUs), or delete the folder to start over")
        if payload is not None:
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            set_rng_state(payload["rng"])
            state = {k: payload[k] for k in ("epoch", "batch", "history", "partial", "elapsed")}
            state["attempts"] = payload.get("attempts", 0)
        state["attempts"] += 1
        self.model = model  # the module whose weights are saved; training steps go through DDP
        if not world.distributed:
            return state, model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return state, torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    # -- during an epoch --------------------------------------------------------------------
    def _bar(self, total, start, desc):
        if not self.progress or not self.world.main:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=start, desc=desc, leave=False, dynamic_ncols=True)

    def _stop_if_asked(self, stop: StopSignals, optimizer, state, partial, done: int, epoch_start: float,
                       started: float, bar, unit: str) -> None:
        """After ``done`` steps of the epoch: if any process got a stop signal, checkpoint here and
        raise :class:`Interrupted` (every process stops at the same step)."""
        signum = dist_.any_stop(stop.received, self.world)
        if signum is None:
            return
        partial["seconds"] = time.time() - epoch_start
        state.update(batch=done, partial=partial, elapsed=time.time() - started)
        path = self._save(optimizer, state)
        if bar is not None:
            bar.close()
        if self.world.main:
            log(f"{signal.Signals(signum).name} received: checkpoint written at epoch {state['epoch'] + 1}, "
                f"{unit} {done}")
        raise Interrupted(signum, path)

    def _save(self, optimizer, state) -> Path:
        """Rank 0 writes the checkpoint; every process returns once it is on disk."""
        path = self.folder / CHECKPOINT
        if self.world.main:
            payload = {"format": CHECKPOINT_FORMAT, "digest": self.digest, "model": self.model.state_dict(),
                       "optimizer": optimizer.state_dict(), "rng": rng_state(), "world_size": self.world.size,
                       **state}
            path = save_checkpoint(self.folder, payload)
        dist_.barrier(self.world)
        return path

    def _write_history(self, history: list[dict[str, Any]], columns: list[str]) -> None:
        """history.csv from the finished epochs (counts as integers, other values as exact floats)."""
        lines = [",".join(columns)]
        lines += [",".join(str(r[k]) if k in COUNT_COLUMNS else repr(float(r[k])) for k in columns) for r in history]
        io.write_text(self.folder / "history.csv", "\n".join(lines) + "\n")


class Run(RunBase):
    """Train ``config`` in ``config['out_dir']``; ``Run(config).execute()`` returns the metrics."""

    def _execute(self, metrics_path: Path) -> dict[str, Any]:
        c, world = self.config, self.world
        self._select_device()
        train_set, test_set, classes, synthetic = make_datasets(c)  # data errors surface before any work
        self._write_config()

        seed_everything(c["seed"])
        model = build_model(c["arch"], c["depth"], c["dataset"], num_classes=classes, **model_knobs(c))
        fmt = torch.channels_last if c["channels_last"] else torch.contiguous_format
        model = model.to(self.device, memory_format=fmt)
        optimizer = torch.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"],
                                    weight_decay=c["weight_decay"], nesterov=c["nesterov"])
        state, trained = self._resume(model, optimizer)

        with StopSignals() as stop:
            started = time.time() - state["elapsed"]
            while state["epoch"] < c["epochs"]:
                self._train_epoch(trained, optimizer, train_set, test_set, state, stop, started, fmt)
        if world.main:
            scores_file = self._capture_attention(model, test_set, fmt) if c["capture_attention"] else None
            metrics = self._metrics(model, state, synthetic, scores_file)
            io.write_json(metrics_path, metrics)  # last: its presence marks a finished run
            log(f"{self.folder}: finished, top-1 final {metrics['final_top1']:.2f} / best "
                f"{metrics['best_top1']:.2f}")
        dist_.barrier(world)
        return metrics if world.main else json.loads(metrics_path.read_text())

    # -- one epoch --------------------------------------------------------------------------
    def _train_epoch(self, model, optimizer, train_set, test_set, state, stop, started, fmt):
        c, epoch = self.config, state["epoch"]
        lr = lr_at(c, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batches = epoch_batches(len(train_set), c["batch_size"], c["seed"], epoch, c["max_batches_per_epoch"])
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        partial = state["partial"] or {"loss": 0.0, "correct": 0, "seen": 0, "step_times": [], "seconds": 0.0}
        start_batch = state["batch"]
        model.train()
        epoch_start = time.time() - partial["seconds"]
        bar = self._bar(len(batches), start_batch, f"epoch {epoch + 1}/{c['epochs']}")
        mine = [dist_.shard(batch, self.world) for batch in batches[start_batch:]]
        for b, (x, y) in enumerate(loader(train_set, mine, c, c["seed"] * 7919 + epoch), start=start_batch):
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=fmt)
            y = y.to(self.device, non_blocking=True)
            t0 = time.perf_counter()
            out = model(x)
            loss = F.cross_entropy(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            partial["step_times"].append(time.perf_counter() - t0)
            loss_sum, correct, seen = dist_.all_sum([loss.item() * len(y), int((out.argmax(1) == y).sum()),
                                                     len(y)], self.world)
            partial["loss"] += loss_sum
            partial["correct"] += int(correct)
            partial["seen"] += int(seen)
            if not math.isfinite(partial["loss"]):
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch + 1}, batch {b + 1}")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{partial['loss'] / partial['seen']:.3f}")
            elif c["log_every"] and (b + 1) % c["log_every"] == 0:
                log(f"epoch {epoch + 1} batch {b + 1}/{len(batches)} loss {partial['loss'] / partial['seen']:.4f}")
            self._stop_if_asked(stop, optimizer, state, partial, b + 1, epoch_start, started, bar, "batch")
        if bar is not None:
            bar.close()
        dist_.sync_buffers(self.model, self.world)  # rank 0's BatchNorm statistics everywhere
        test_loss, top1, top5 = self.evaluate(self.model, test_set, fmt)
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": partial["loss"] / partial["seen"],
               "train_top1": 100.0 * partial["correct"] / partial["seen"], "test_loss": test_loss,
               "test_top1": top1, "test_top5": top5, "epoch_seconds": time.time() - epoch_start,
               "step_seconds": statistics.median(partial["step_times"])}
        state["history"].append(row)
        state.update(epoch=epoch + 1, batch=0, partial=None, elapsed=time.time() - started)
        self._save(optimizer, state)
        if not self.world.main:
            return
        self._write_history(state["history"], HISTORY_COLUMNS)
        log(f"epoch {epoch + 1}/{c['epochs']}: lr {lr:.4g} train loss {row['train_loss']:.4f} "
            f"top-1 {row['train_top1']:.2f} | test loss {test_loss:.4f} top-1 {top1:.2f} top-5 {top5:.2f} "
            f"| {row['epoch_seconds']:.1f}s, {row['step_seconds'] * 1000:.0f} ms/step")

    # -- evaluation -------------------------------------------------------------------------
    def _test_batches(self, test_set) -> list[list[int]]:
        """The test set in order, in batches of ``test_batch_size``."""
        size = self.config["test_batch_size"]
        return [list(range(i, min(i + size, len(test_set)))) for i in range(0, len(test_set), size)]

    @torch.no_grad()
    def evaluate(self, model, test_set, fmt) -> tuple[float, float, float]:
        c = self.config
        model.eval()
        loss = top1 = top5 = seen = 0
        world = getattr(self, "world", dist_.World())
        for x, y in loader(test_set, self._test_batches(test_set)[world.rank::world.size], c, 0):
            x = x.to(self.device).contiguous(memory_format=fmt)
            y = y.to(self.device)
            out = model(x)
            loss += float(F.cross_entropy(out, y, reduction="sum"))
            best5 = out.topk(min(5, out.shape[1]), dim=1).indices
            top1 += int((best5[:, 0] == y).sum())
            top5 += int((best5 == y[:, None]).any(1).sum())
            seen += len(y)
        loss, top1, top5, seen = dist_.all_sum([loss, top1, top5, seen], world)
        return loss / seen, 100.0 * top1 / seen, 100.0 * top5 / seen

    @torch.no_grad()
    def _capture_attention(self, model, test_set, fmt) -> str:
        """Mean attention scores of stage 3 over the test set, saved per block (Figure 2)."""
        stage = model.stages[2].interaction
        assert isinstance(stage, BaseAttention)
        sums: list[torch.Tensor] = []
        stage.captured, seen = [], 0
        try:
            model.eval()
            c = self.config
            for x, _ in loader(test_set, self._test_batches(test_set), c, 0):
                stage.captured.clear()
                model(x.to(self.device).contiguous(memory_format=fmt))
                per_block = [s.sum(0).double().cpu() for s in stage.captured]  # [heads, t]
                sums = per_block if not sums else [a + b for a, b in zip(sums, per_block)]
                seen += len(x)
        finally:
            stage.captured = None
        means = [s / seen for s in sums]
        n = len(means)
        matrix = np.full((n, n), np.nan)
        for i, m in enumerate(means):
            matrix[i, : i + 1] = m.mean(0).numpy()
        arrays = {"scores": matrix, **{f"block{i + 1}": m.numpy() for i, m in enumerate(means)}}
        path = self.folder / "attention_stage3.npz"

        io.write_with(path, lambda fh: np.savez(fh, **arrays))
        return path.name

    # -- results ----------------------------------------------------------------------------
    def _metrics(self, model, state, synthetic: bool, scores_file: str | None) -> dict[str, Any]:
        from .modelinfo import count_macs, count_params

        c, history = self.config, state["history"]
        best = max(history, key=lambda r: r["test_top1"])
        return {
            "run": {k: c[k] for k in ("dataset", "arch", "depth", "seed", "recipe", "cell", "sigma", "reduction")},
            "final_top1": history[-1]["test_top1"], "final_top5": history[-1]["test_top5"],
            "final_test_loss": history[-1]["test_loss"],
            "best_top1": best["test_top1"], "best_epoch": best["epoch"], "epochs": len(history),
            "params": count_params(model), "macs": count_macs(model.cpu(), c["dataset"]),
            "step_seconds": statistics.median(r["step_seconds"] for r in history),
            "wall_seconds": state["elapsed"], "attempts": state["attempts"],
            "device": str(self.device), "threads": torch.get_num_threads(), "world_size": self.world.size,
            "torch_version": torch.__version__, "dlarepro_version": __version__, "git_commit": git_commit(),
            "synthetic": bool(synthetic), "config_digest": self.digest,
            "attention_scores": scores_file,
            "weights_sha256": weights_digest(model),
        }


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over the state dict's bytes: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def train(config: dict[str, Any], progress: bool | None = None) -> dict[str, Any]:
    """Train one run (resuming if its folder has a checkpoint); return its metrics."""
    return Run(config, progress).execute()


def train_any(config: dict[str, Any], progress: bool | None = None) -> dict[str, Any]:
    """:func:`train`, or :func:`dlarepro.detection.train_detection` for a config naming a detector."""
    from .detection import is_detection, train_detection

    return (train_detection if is_detection(config) else train)(config, progress)


#: metrics that measure the machine or the history of a run, not what it computed
CIRCUMSTANTIAL = ("wall_seconds", "step_seconds", "attempts", "git_commit")
