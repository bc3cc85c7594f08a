"""What every kind of run shares: the run folder contract, process and device set-up, resuming,
the epoch loop, checkpoints at a stop signal, history and the common metrics.

A run folder holds ``run.yaml`` (identity and resolved config), ``config.yaml``, ``history.csv``
(one row per epoch), ``checkpoint.pt`` (+ ``checkpoint.prev.pt``) and last ``metrics.json``: a
folder with ``metrics.json`` is a finished run, one without it is not.

Determinism: data order and augmentation of every epoch are functions of (seed, epoch, index) and
the checkpoint carries every RNG and the position inside the epoch, so a run killed anywhere and
restarted ends with bit-identical weights (CPU, same thread count). SIGTERM and SIGUSR2 (SLURM's
warnings before a time limit or preemption) save a checkpoint at the next step and raise
:class:`Interrupted`. With several processes (one per GPU, :mod:`dlarepro.distributed`) every
process takes an equal share of each global batch, the processes agree at every step on whether to
stop, and only rank 0 writes files; a run resumes only with the number of processes it started with.

A kind of run (``dlarepro.classification``, ``dlarepro.detection``) subclasses :class:`RunBase`,
names its ``resolver`` and implements ``_execute``, ``train_step`` and ``epoch_row``.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import yaml

from . import __version__, atomic, provenance, runlock, speed
from . import distributed as dist_
from .checkpoints import (CHECKPOINT, CHECKPOINT_FORMAT, find_resume_point, rank_seed, rng_of_rank, rng_state,
                          save_checkpoint, seed_everything, set_rng_state)
from .environment import lock_record
from .identity import RUN_FILE, RunRecord, identity_of_config, read_run_file, write_run_file
from .interrupt import Interrupted
from .runconfig import config_digest

COUNT_COLUMNS = ("epoch", "iterations")  # history.csv columns written as integers
#: metrics that measure the machine or the history of a run, not what it computed
CIRCUMSTANTIAL = ("wall_seconds", "step_seconds", "attempts", "git_commit")


def log(message: str) -> None:
    print(f"[dla-repro {time.strftime('%H:%M:%S')}] {message}", flush=True)


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
    """Turn SIGTERM / SIGUSR2 into a flag checked at safe points (main thread only).

    During training steps (``in_steps``) both signals make the run checkpoint at the next step.
    A SIGTERM anywhere else (evaluation, set-up, writing files) stops the run at once: it is a
    cancellation (``scancel``) or the end of the grace period, and waiting for the next step could
    take minutes. Every file is written atomically, so stopping there leaves nothing half-written.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

    def __init__(self):
        self.received: int | None = None
        self.in_steps = False
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum
        if signum == signal.SIGTERM and not self.in_steps:
            raise Interrupted(signum, None)

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, limit: int | None) -> list[list[int]]:
    """The shuffled batches of one epoch: a function of (seed, epoch) alone."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    return batches[:limit] if limit else batches


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over the state dict's bytes: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class Step:
    """What one training step reports: values summed over the processes, and a text for the log."""

    sums: dict[str, float]
    detail: str = ""


class RunBase:
    """One run of some kind. ``RunKind(config).execute()`` trains (resuming) and returns the metrics."""

    resolver: Callable[[dict[str, Any]], dict[str, Any]]
    history_columns: list[str]
    unit = "batch"            # what one step is called in logs
    loss_denominator = "seen"  # the summed value the running loss is divided by

    def __init__(self, config: dict[str, Any], progress: bool | None = None):
        self.config = type(self).resolver(config)
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
        with speed.determinism(c["deterministic"]):
            self.world = dist_.setup(c["device"], force=c["force_distributed"])
            try:
                with runlock.hold(self.folder, self.world, log):  # one writer per run folder
                    if metrics_path.exists():  # finished by the writer this one waited for
                        return json.loads(metrics_path.read_text())
                    self.data = provenance.describe(c["dataset"], c["data_root"])
                    return self._execute(metrics_path)
            finally:
                dist_.teardown(self.world)

    def _execute(self, metrics_path: Path) -> dict[str, Any]:
        raise NotImplementedError

    def train_step(self, model, optimizer, batch, epoch: int, index: int) -> Step:
        raise NotImplementedError

    def epoch_row(self, epoch: int, sums: dict[str, float], step_times: list[float], seconds: float,
                  batches: int) -> dict[str, Any]:
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
        speed.check_amp(c["amp"], self.device)
        self.scaler = speed.grad_scaler(c["amp"], self.device)
        self.workers = speed.resolve_workers(c["num_workers"])

    def _write_config(self) -> None:
        """``config.yaml`` and, unless the workflow wrote it before submission, ``run.yaml``."""
        if not self.world.main:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.folder / "config.yaml", yaml.safe_dump(self.config, sort_keys=True))
        self.identity = identity_of_config(self.config)
        if (self.folder / RUN_FILE).exists():
            try:
                self.identity = read_run_file(self.folder).identity
                return
            except ValueError as err:
                log(f"{err}: rewritten from the config")
        write_run_file(self.folder, RunRecord(self.identity, self.config))

    def _resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], torch.nn.Module]:
        """Load the newest usable checkpoint into ``model`` and ``optimizer``; return the run state
        and the module training steps go through (DDP around ``model`` with several processes)."""
        world = self.world
        if world.rank:
            # model-side randomness (drop-path) must differ between processes; the weights were drawn
            # alike everywhere (and DDP starts from rank 0's). Rank 0 keeps a one-process run's stream.
            seed_everything(rank_seed(self.config["seed"], world.rank))
        state = {"epoch": 0, "batch": 0, "history": [], "partial": None, "elapsed": 0.0, "attempts": 0}
        payload, note = find_resume_point(self.folder, self.digest, self.data["fingerprint"], set_aside=world.main)
        if world.main:
            log(f"{self.folder}: {note}")
        if payload is not None and payload.get("world_size", 1) != world.size:
            raise RuntimeError(f"{self.folder}: the checkpoint was written by {payload.get('world_size', 1)} "
                               f"process(es) and this job has {world.size}; resume with the same number of "
                               f"processes (GPUs), or delete the folder to start over")
        if payload is not None:
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            set_rng_state(rng_of_rank(payload, world.rank))
            if self.scaler is not None and payload.get("scaler"):
                self.scaler.load_state_dict(payload["scaler"])
            state = {k: payload[k] for k in ("epoch", "batch", "history", "partial", "elapsed")}
            state["attempts"] = payload.get("attempts", 0)
        state["attempts"] += 1
        self.model = model  # the module whose weights are saved; training steps go through DDP / compile
        speed.apply_tails(model, self.config["tails"])
        trained = model
        if world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # static graph: the same parameters take part in every step, and the few that never do (a
            # stage of one block has no layer to refresh) are found in the first step, not every step
            trained = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, static_graph=True)
        return state, speed.maybe_compile(trained, self.config["compile"])

    # -- one step ---------------------------------------------------------------------------
    def autocast(self):
        """The ``amp`` switch around forward and loss (nothing when it is off)."""
        return speed.autocast(self.config["amp"], self.device)

    def optimizer_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward and update; fp16 scales the loss (and skips steps whose gradients overflowed)."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()

    # -- the epoch loop ---------------------------------------------------------------------
    def run_epoch(self, model, optimizer, state: dict[str, Any], stop: StopSignals, started: float,
                  data: Iterable, total: int) -> dict[str, Any]:
        """Train the rest of epoch ``state['epoch']`` from step ``state['batch']`` on ``data`` (this
        process's batches from there on); checkpoint and stop when asked. Returns the history row."""
        c, epoch = self.config, state["epoch"]
        partial = state["partial"] or {"sums": {}, "step_times": [], "seconds": 0.0}
        start = state["batch"]
        model.train()
        epoch_start = time.time() - partial["seconds"]
        bar = self._bar(total, start, f"epoch {epoch + 1}/{c['epochs']}")
        stop.in_steps = True
        for b, batch in enumerate(data, start=start):
            t0 = time.perf_counter()
            step = self.train_step(model, optimizer, batch, epoch, b)
            partial["step_times"].append(time.perf_counter() - t0)
            names = sorted(step.sums)
            totals = dist_.all_sum([step.sums[k] for k in names], self.world)
            for name, value in zip(names, totals):
                partial["sums"][name] = partial["sums"].get(name, 0.0) + value
            running = partial["sums"]["loss"] / max(partial["sums"].get(self.loss_denominator, 1.0), 1.0)
            if not math.isfinite(running):
                raise FloatingPointError(f"training loss became {running} at epoch {epoch + 1}, {self.unit} {b + 1}"
                                         + (f" ({step.detail})" if step.detail else ""))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{running:.3f}")
            elif self.world.main and c["log_every"] and (b + 1) % c["log_every"] == 0:
                log(f"epoch {epoch + 1} {self.unit} {b + 1}/{total} loss {running:.4f}"
                    + (f" ({step.detail})" if step.detail else ""))
            self._stop_if_asked(stop, optimizer, state, partial, b + 1, epoch_start, started, bar)
        stop.in_steps = False
        if bar is not None:
            bar.close()
        return self.epoch_row(epoch, partial["sums"], partial["step_times"], time.time() - epoch_start, total)

    def end_epoch(self, optimizer, state: dict[str, Any], row: dict[str, Any], started: float) -> None:
        """Record the finished epoch: history, checkpoint, history.csv and a log line."""
        state["history"].append(row)
        state.update(epoch=row["epoch"], batch=0, partial=None, elapsed=time.time() - started)
        self._save(optimizer, state)
        if self.world.main:
            self._write_history(state["history"])
            shown = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", *COUNT_COLUMNS))
            log(f"epoch {row['epoch']}/{self.config['epochs']}: {shown}")

    def _bar(self, total, start, desc):
        if not self.progress or not self.world.main:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=start, desc=desc, leave=False, dynamic_ncols=True)

    def _stop_if_asked(self, stop: StopSignals, optimizer, state, partial, done: int, epoch_start: float,
                       started: float, bar) -> None:
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
                f"{self.unit} {done}")
        raise Interrupted(signum, path)

    def _save(self, optimizer, state) -> Path:
        """Rank 0 writes the checkpoint, with every process's RNG states; all return once it is on disk."""
        path = self.folder / CHECKPOINT
        states = dist_.gather_to_main(rng_state(), self.world)  # one per rank, in rank order
        if self.world.main:
            payload = {"format": CHECKPOINT_FORMAT, "digest": self.digest, "data_fingerprint": self.data["fingerprint"],
                       "model": self.model.state_dict(), "optimizer": optimizer.state_dict(), "rng": states,
                       "world_size": self.world.size,
                       "scaler": self.scaler.state_dict() if self.scaler is not None else None, **state}
            path = save_checkpoint(self.folder, payload)
        dist_.barrier(self.world)
        return path

    def _write_history(self, history: list[dict[str, Any]]) -> None:
        """history.csv from the finished epochs (counts as integers, other values as exact floats)."""
        columns = self.history_columns
        lines = [",".join(columns)]
        lines += [",".join(str(r[k]) if k in COUNT_COLUMNS else repr(float(r[k])) for k in columns) for r in history]
        atomic.write_text(self.folder / "history.csv", "\n".join(lines) + "\n")

    # -- results ----------------------------------------------------------------------------
    def common_metrics(self, model: torch.nn.Module, state: dict[str, Any], synthetic: bool) -> dict[str, Any]:
        """The metrics every kind records: which run, how it ran, where, and the final weights."""
        from .modelinfo import count_params

        history = state["history"]
        return {
            "run": {**self.identity.to_dict(), "recipe": self.config["recipe"]},
            "run_id": self.identity.run_id, "config_id": self.identity.config_id,
            "epochs": len(history), "params": count_params(model),
            "step_seconds": statistics.median(r["step_seconds"] for r in history),
            "wall_seconds": state["elapsed"], "attempts": state["attempts"],
            "device": str(self.device), "threads": torch.get_num_threads(), "world_size": self.world.size,
            "torch_version": torch.__version__, "dlarepro_version": __version__, "git_commit": git_commit(),
            "synthetic": bool(synthetic), "config_digest": self.digest, "weights_sha256": weights_digest(model),
            "switches": speed.switches_of(self.config), "num_workers": self.workers,
            "environment_lock": lock_record(),
            "data": self.data,  # which data, and whether the paper's numbers may be compared (provenance)
        }

    def finish(self, metrics_path: Path, metrics: dict[str, Any], summary: str) -> dict[str, Any]:
        """Rank 0 writes ``metrics.json`` last (its presence marks a finished run); all return it."""
        if self.world.main:
            # the final weights alone (what DVC versions; checkpoints are not cached), then metrics.json
            atomic.torch_save(self.model.state_dict(), self.folder / "weights.pt")
            atomic.write_json(metrics_path, metrics)
            log(f"{self.folder}: finished, {summary}")
        dist_.barrier(self.world)
        return metrics if self.world.main else json.loads(metrics_path.read_text())
