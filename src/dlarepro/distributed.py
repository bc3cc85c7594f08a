"""One process per GPU: torch.distributed set up from the job's environment, and every collective
the runs use.

A submitit SLURM job with ``tasks_per_node = gpus`` runs one task per GPU; its environment
(``submitit.JobEnvironment``) gives every task its rank, and ``TorchDistributedEnvironment``
exports the ``env://`` variables. ``torchrun`` sets the same variables itself. A job with one
task, or no such variables, trains in one process without a process group, unless the run asks
for the distributed path anyway (``force_distributed``: one process that still creates the process
group, wraps the model in DDP and goes through every collective; ``make gpu-check`` uses it on a
one-GPU machine, where NCCL refuses two ranks on the same GPU).

Where collective tensors live is decided here, once: :attr:`World.device` is the process group's
device (``cuda:<local rank>`` under NCCL, which reduces CUDA tensors only; the CPU under gloo).
Every helper below builds its tensors there; no other module calls ``torch.distributed`` directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    #: whether a process group exists (several processes, or one forced onto the distributed path)
    group: bool = False
    #: the device every collective tensor is built on (the process group's device)
    device: str = "cpu"

    @property
    def distributed(self) -> bool:
        return self.group

    @property
    def main(self) -> bool:
        return self.rank == 0


def _submitit_tasks() -> int:
    """Number of tasks of the submitit job this process runs in (1 outside submitit)."""
    if "SUBMITIT_FOLDER" not in os.environ and "SUBMITIT_EXECUTOR" not in os.environ:
        return 1
    try:
        import submitit

        return submitit.JobEnvironment().num_tasks
    except RuntimeError:  # not inside a submitit job after all
        return 1


def backend_for(device: str) -> str:
    """NCCL for a CUDA run on a machine that has CUDA, gloo otherwise."""
    return "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"


def collective_device(backend: str, local_rank: int) -> str:
    """The device collective tensors must sit on under ``backend`` (NCCL: this process's GPU)."""
    return f"cuda:{local_rank % max(torch.cuda.device_count(), 1)}" if backend == "nccl" else "cpu"


def setup(device: str, force: bool = False) -> World:
    """Join the job's process group if it has several processes (or ``force``); return this process's place.

    ``device`` is the run's device setting: CUDA uses NCCL and one GPU per local rank, the CPU gloo.
    """
    if "WORLD_SIZE" not in os.environ and _submitit_tasks() > 1:
        import submitit

        # sets MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK; CUDA_VISIBLE_DEVICES only with GPUs
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 and not force:
        return World()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    backend = backend_for(device)
    world = World(rank, size, local_rank, group=True, device=collective_device(backend, local_rank))
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(torch.device(world.device))
        if "MASTER_ADDR" in os.environ:  # env:// as SLURM (submitit) and torchrun set it up
            dist.init_process_group(backend, rank=rank, world_size=size)
        else:  # one forced process started by hand: an in-memory store needs no port
            dist.init_process_group(backend, store=dist.HashStore(), rank=rank, world_size=size)
    return world


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], world: World) -> list[float]:
    """Element-wise sum over the processes (float64, so counts stay exact)."""
    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def any_stop(signum: int | None, world: World) -> int | None:
    """The stop signal any process received (each checks at the same batch, so all stop together)."""
    if not world.distributed:
        return signum
    t = torch.tensor([signum or 0], dtype=torch.int64, device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item()) or None


def sync_buffers(module: torch.nn.Module, world: World) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics) before evaluating or saving."""
    if world.distributed:
        for buffer in module.buffers():
            # buffers live with the model on the run's device, which is the group's device
            dist.broadcast(buffer, src=0)


def gather_to_main(obj: Any, world: World) -> list[Any] | None:
    """Every process's ``obj`` as a list in rank order on rank 0 (None elsewhere); ``[obj]`` alone."""
    if not world.distributed:
        return [obj]
    out: list[Any] | None = [None] * world.size if world.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def scatter_from_main(objects: list[Any] | None, world: World) -> Any:
    """Rank r receives ``objects[r]`` from rank 0 (``objects`` matters on rank 0 only)."""
    if not world.distributed:
        return objects[0] if objects else None
    out: list[Any] = [None]
    dist.scatter_object_list(out, objects if world.main else None, src=0)
    return out[0]


def all_gather_objects(obj: Any, world: World) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    if world.distributed:
        # under NCCL the barrier's own tensor goes to the current device, which setup() selected
        dist.barrier(device_ids=[torch.device(world.device).index]) if world.device != "cpu" else dist.barrier()


def shard(batch: list[Any], world: World) -> list[Any]:
    """This process's equal share of one global batch (a remainder that cannot be split evenly is
    dropped, so every process runs the same number of samples and draws the same random numbers)."""
    if world.size <= 1:
        return batch
    per = len(batch) // world.size
    return batch[world.rank * per:(world.rank + 1) * per]
