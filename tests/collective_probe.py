"""Run one training process with every torch.distributed collective recorded (used by test_gpu_path).

``python collective_probe.py CONFIG.json RECORD.json``: trains the run config (any kind) in this
process, as one rank of whatever the ``env://`` variables say (or one forced process), and writes
the collectives it called: name, the devices of its tensor arguments, the module that called it,
and the device the process group's World chose for collective tensors.
"""

from __future__ import annotations

import inspect
import json
import sys

import torch
import torch.distributed as dist

from dlarepro import distributed as dist_
from dlarepro import kinds

NAMES = ("all_reduce", "broadcast", "barrier", "gather_object", "all_gather_object", "scatter_object_list",
         "all_gather", "all_gather_into_tensor", "gather", "scatter", "reduce", "reduce_scatter",
         "broadcast_object_list", "send", "recv")
calls: list[dict] = []
worlds: list[str] = []


def tensors(value):
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors(item)


def wrap(name, function):
    def recorded(*args, **kwargs):
        caller = inspect.currentframe().f_back.f_globals.get("__name__", "?")
        devices = sorted({str(t.device) for a in (*args, *kwargs.values()) for t in tensors(a)})
        calls.append({"name": name, "devices": devices, "caller": caller})
        return function(*args, **kwargs)

    return recorded


for name in NAMES:
    if hasattr(dist, name):
        setattr(dist, name, wrap(name, getattr(dist, name)))
setup = dist_.setup


def recording_setup(*args, **kwargs):
    world = setup(*args, **kwargs)
    worlds.append(world.device)
    return world


dist_.setup = recording_setup
if __name__ == "__main__":
    config = json.loads(open(sys.argv[1]).read())
    metrics = kinds.train(kinds.resolve(config), progress=False)
    with open(sys.argv[2], "w") as fh:
        json.dump({"calls": calls, "world_device": worlds[0], "weights": metrics["weights_sha256"]}, fh)
