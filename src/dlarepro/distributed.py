"""One process per GPU: torch.distributed set up from the job's environment.

A submitit SLURM job with ``tasks_per_node = gpus`` runs one task per GPU; its environment
(``submitit.JobEnvironment``) gives every task its rank, and ``TorchDistributedEnvironment``
exports the ``env://`` variables. ``torchrun`` sets the same variables itself. A job with one
task, or no such variables, trains in one process without a process group, exactly as before.
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

    @property
    def distributed(self) -> bool:
        return self.size > 1

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


def setup(device: str) -> World:
    """Join the job's process group if it has several processes; return this process's place.

    ``device`` is the run's device setting: CUDA uses NCCL and one GPU per local rank, the CPU gloo.
    """
    if "WORLD_SIZE" not in os.environ and _submitit_tasks() > 1:
        import submitit

        # sets MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK; CUDA_VISIBLE_DEVICES only with GPUs
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
        dist.init_process_group("nccl" if cuda else "gloo", rank=world.rank, world_size=world.size)
    return world


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], world: World) -> list[float]:
    """Element-wise sum over the processes (float64, so counts stay exact)."""
    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_stop(signum: int | None, world: World) -> int | None:
    """The stop signal any process received (each checks at the same batch, so all stop together)."""
    if not world.distributed:
        return signum
    t = torch.tensor([signum or 0], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item()) or None


def sync_buffers(module: torch.nn.Module, world: World) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics) before evaluating or saving."""
    if world.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shard(batch: list[Any], world: World) -> list[Any]:
    """This process's equal share of one global batch (a remainder that cannot be split evenly is
    dropped, so every process runs the same number of samples and draws the same random numbers)."""
    if not world.distributed:
        return batch
    per = len(batch) // world.size
    return batch[world.rank * per:(world.rank + 1) * per]
