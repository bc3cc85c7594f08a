"""How a run uses its machine without changing the paper's setting by default: the speed switches
(``amp``, ``compile``, ``deterministic``, ``tails``) and the input pipeline's worker count.

* ``amp``: ``off`` (fp32, the paper's), ``bf16`` or ``fp16`` autocast around forward and loss; fp16
  scales the loss with a GradScaler, whose state the checkpoint carries.
* ``compile``: ``torch.compile`` of the module the training steps go through (the weights saved are
  the plain module's, so checkpoints do not depend on it).
* ``deterministic``: true selects deterministic algorithms (``torch.use_deterministic_algorithms``,
  cuDNN's deterministic kernels, and cuBLAS's fixed workspace ``CUBLAS_WORKSPACE_CONFIG``), so a
  resumed GPU run ends bit-identical to an uninterrupted one; false lets cuDNN benchmark its
  algorithms (faster, not repeatable bit for bit on a GPU). On the CPU both are repeatable.
* ``tails``: how the layer-attention tails are computed (:mod:`dlarepro.models.tails`): ``auto``
  fused and compiled on CUDA, the C++ kernels (``native``) on the CPU where they apply (channels-last
  float maps), the op-by-op reference elsewhere; the same numbers within float error.

``num_workers: auto`` gives each training process the CPUs SLURM allots to its task
(``SLURM_CPUS_PER_TASK``), or else its share of the CPUs it may run on (the affinity mask divided
among the node's training processes), less one for the trainer itself.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any, Iterator, Mapping

import torch

#: cuBLAS's documented setting for reproducible results (a fixed workspace per handle)
CUBLAS_WORKSPACE = ":4096:8"
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def switches_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The switch values a run trained with (``metrics.json``'s ``switches``)."""
    from .runconfig import SWITCHES

    out = {name: config.get(name, default) for name, default in SWITCHES.items()}
    if "channels_last" in config:  # classification only: a memory layout, same numbers within float error
        out["channels_last"] = config["channels_last"]
    return out


@contextlib.contextmanager
def determinism(deterministic: bool) -> Iterator[None]:
    """Apply the ``deterministic`` switch for the duration of a run, then restore the process's settings
    (tests train several runs in one process)."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    try:
        if deterministic:
            # read by cuBLAS when a handle is created: set before the run's first CUDA matmul
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = before[4] or CUBLAS_WORKSPACE
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        else:
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]
        if before[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def check_amp(amp: str, device: torch.device) -> None:
    """A clear error for a precision the device cannot run (bf16 needs an Ampere-or-newer GPU)."""
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"amp=bf16 requested but {torch.cuda.get_device_name(device)} has no bfloat16 "
                           f"support; use amp=fp16 or amp=off")


def autocast(amp: str, device: torch.device):
    """The autocast context of the ``amp`` switch (a no-op context when it is off)."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 needs its loss scaled (its gradients underflow otherwise); bf16 has fp32's range."""
    return torch.amp.GradScaler(device.type) if amp == "fp16" else None


def maybe_compile(module: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    return torch.compile(module) if enabled else module


def apply_tails(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """The ``tails`` switch: how every layer-attention tail of ``model`` runs (dlarepro.models.tails)."""
    from .models.tails import set_tails

    return set_tails(model, mode)


# ------------------------------------------------------------------------------------------------
# the input pipeline's workers


def _slurm_tasks_on_node() -> int | None:
    """Tasks of this SLURM step on this node: ``SLURM_NTASKS_PER_NODE`` or ``SLURM_TASKS_PER_NODE``
    (``4`` or ``4(x2)``: the first node's count stands for every node of a homogeneous job)."""
    for name in ("SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        match = re.match(r"\d+", os.environ.get(name, ""))
        if match:
            return int(match.group())
    return None


def processes_on_node() -> int:
    """Training processes sharing this node: torchrun's ``LOCAL_WORLD_SIZE``, SLURM's tasks per node, or 1."""
    if os.environ.get("LOCAL_WORLD_SIZE", "").isdigit():
        return max(1, int(os.environ["LOCAL_WORLD_SIZE"]))
    return max(1, _slurm_tasks_on_node() or 1)


def cpus_for_this_process() -> int:
    """CPUs this training process may use: SLURM's per-task allotment when there is one, else the
    affinity mask (shared by every process of the node) divided among the node's processes."""
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if per_task.isdigit() and int(per_task) > 0:
        return int(per_task)
    try:
        mask = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        mask = os.cpu_count() or 1
    return max(1, mask // processes_on_node())


def resolve_workers(setting: int | str) -> int:
    """DataLoader workers for ``num_workers`` (``auto``: this process's CPUs less one for the trainer)."""
    if setting == "auto":
        return max(0, cpus_for_this_process() - 1)
    return int(setting)
