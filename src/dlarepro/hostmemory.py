"""Keep a training process's freed host memory for its next step.

glibc gives large blocks back to the kernel as they are freed: blocks above its mmap threshold are
unmapped, and a free heap top above its trim threshold is trimmed. A CPU training step allocates the
same feature maps every step, so a step takes a page fault for every 4 KiB of many fresh maps it
writes: up to ~90 000 faults per ResNet-56 or DLA-L-56 step at batch 64 here, whose steps then vary
by a fifth (README, benchmark). :func:`keep_freed_memory` makes the process keep them: large blocks
come from the heap, and the heap is not trimmed. After a few steps (large aligned blocks fragment it
at first) the heap holds the step's peak, which the process reaches anyway, and steps take no faults.

Applied by the processes that train or time training (``TrainJob``, ``dla-repro train``, the
benchmark), not on import: a notebook keeps glibc's defaults. The debug executor runs a
``TrainJob`` in its caller's process, which then keeps its freed memory too.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: the largest trim threshold mallopt takes (an int): a free heap top beyond 2 GiB is still trimmed
NEVER_TRIM = 2**31 - 1

_applied = False


def _glibc():
    """glibc's handle, or None on another C library (musl, macOS): nothing to tune there."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_memory() -> bool:
    """Serve large blocks from the heap and stop trimming it, for this process and the children it
    forks (data-loader workers). Returns whether the tuning is in effect (False off glibc)."""
    global _applied
    if _applied:
        return True
    libc = _glibc()
    if libc is None:
        return False
    # mallopt returns 1 on success; setting either value also turns off glibc's dynamic thresholds
    _applied = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
    return _applied

