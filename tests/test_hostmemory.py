"""A training process keeps its freed memory: the same large maps, allocated step after step, are
faulted in once, not at every step (glibc's defaults unmap them at every free)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dlarepro import hostmemory

# each case runs in a fresh interpreter: mallopt changes the whole process, for good
PROBE = """
import json, resource, sys, torch
from dlarepro import hostmemory
minor_faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt  # fresh pages, mostly
applied = hostmemory.keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for step in range(10):
    before = minor_faults()
    maps = [torch.ones(48 * 2**20 // 4) for _ in range(3)]  # 3 maps of 48 MiB, written
    del maps
    faults.append(minor_faults() - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(hostmemory._glibc() is None, reason="mallopt is glibc's; other C libraries keep their defaults")
def test_kept_memory_is_not_faulted_in_again_at_every_step():
    pages_per_step = 3 * 48 * 2**20 // 4096
    default, kept = probe("default"), probe("keep")
    # glibc's default: blocks this large are mmapped and unmapped at free, so every step faults them in
    assert all(f >= pages_per_step for f in default["faults"]), default
    assert kept["applied"] is True
    assert kept["faults"][0] >= pages_per_step  # the first step grows the heap
    # the heap settles within a few steps (large aligned blocks fragment it at first); from then on
    # every step reuses it
    assert max(kept["faults"][-4:]) < pages_per_step // 100, kept


def test_keep_freed_memory_is_idempotent_in_one_process():
    out = subprocess.run([sys.executable, "-c", "from dlarepro import hostmemory as h; "
                          "print(h.keep_freed_memory(), h.keep_freed_memory())"],
                         check=True, capture_output=True, text=True)
    expected = "True True" if hostmemory._glibc() is not None else "False False"
    assert out.stdout.strip() == expected
