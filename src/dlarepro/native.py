"""The project's native kernels (``resources/native/*.cpp``: the light blocks with their join and
stencils inside, the base tails, the B methods' join, the per-block vector work, the DSU cell's
gates), one library built on first use.

Compiled with the system's C++ compiler (``$CXX``, default ``g++``; no torch headers, about a
second) into ``$XDG_CACHE_HOME/dla-repro/native`` (default ``~/.cache/...``), named by a hash of
the sources, compiler, flags and CPU kind (``-march=native``), and written atomically, so
concurrent jobs on a node share one build and nodes of another kind build their own. Loaded with ctypes. :func:`library` raises :class:`BuildError` when there is no compiler or
the build fails; callers fall back to the pure-torch path (``models.tails``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17", "-Wno-psabi"]


class BuildError(RuntimeError):
    """The native kernel could not be compiled (no C++ compiler, or the compiler failed)."""


#: the kernels' sources (compiled together into one library) and the header they share
SOURCES = ("light_block.cpp", "base_tail.cpp", "join.cpp", "vectors.cpp", "cells.cpp")
HEADERS = ("common.h",)


def sources() -> dict[str, str]:
    """File name -> text of every source and header."""
    folder = resources.files("dlarepro") / "resources" / "native"
    return {name: (folder / name).read_text() for name in HEADERS + SOURCES}


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dla-repro" / "native"


def cpu_identity() -> str:
    """What ``-march=native`` compiles for: the architecture and the first CPU's vendor, model and
    instruction-set flags. Part of the library's name, so that a cache in a home directory shared
    by a cluster's nodes never hands one kind of node a library built for another (SIGILL)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        if not line.strip() and fields:
            break  # the first processor's block is enough
        name, _, value = line.partition(":")
        if name.strip() in ("vendor_id", "model name", "flags", "CPU implementer", "CPU part", "Features"):
            fields[name.strip()] = value.strip()
    return "\0".join([platform.machine(), platform.processor(), *(f"{k}={v}" for k, v in sorted(fields.items()))])


def build(cache: Path | None = None) -> Path:
    """The shared library's path, compiled unless these sources were built with this compiler, for
    this kind of CPU, before."""
    compiler = os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        raise BuildError(f"no C++ compiler {compiler!r} on PATH (set CXX to one)")
    texts = sources()
    key = hashlib.sha256("\0".join([*texts, *texts.values(), compiler, *FLAGS, cpu_identity()]).encode())
    key = key.hexdigest()[:16]
    target = (cache or cache_dir()) / f"dlarepro-native-{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        for name, text in texts.items():
            (Path(scratch) / name).write_text(text)
        out = Path(scratch) / target.name
        done = subprocess.run([compiler, *FLAGS, *SOURCES, "-o", str(out)], capture_output=True, text=True,
                              cwd=scratch)
        if done.returncode != 0:
            raise BuildError(f"{compiler} failed on {' '.join(SOURCES)}:\n{done.stderr[-3000:]}")
        os.replace(out, target)  # atomic: a concurrent or killed build never leaves half a library
    return target


_library: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """The loaded kernel library (built on first call in this process)."""
    global _library
    if _library is None:
        _library = _declare(ctypes.CDLL(str(build())))
    return _library


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, i32, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
    for suffix in ("f32", "f64"):
        join, forward = getattr(lib, f"light_join_{suffix}"), getattr(lib, f"light_forward_{suffix}")
        sums, maps = getattr(lib, f"light_backward_sums_{suffix}"), getattr(lib, f"light_backward_maps_{suffix}")
        join.argtypes = [p, p, p, p, i64, i64, i64, i64, p, p, p, i32]
        forward.argtypes = [p, p, p, p, p, p, i32, p, p, p, p, f64, i64, i64, i64, i64, p, p, p, p, i32, i32]
        sums.argtypes = [p, p, p, p, p, p, p, i32, p, p, p, p, p, i32, i64, i64, i64, i64, p, p, p, p, p, p, p, i32]
        maps.argtypes = [p, p, p, p, p, p, p, i32, p, p, p, p, p, p, i64, i64, i64, i64, p, p, p, p, i32]
        join.restype = forward.restype = sums.restype = maps.restype = i32
        forward, backward = getattr(lib, f"base_tail_forward_{suffix}"), getattr(lib, f"base_tail_backward_{suffix}")
        forward.argtypes = [p, i64, p, p, p, p, p, p, f64, i64, i64, i64, i64, p, p, p, p, p, p, i32, i32]
        backward.argtypes = [p, p, p, i64, p, p, p, p, p, i32, i64, i64, i64, p, p, p, p, i32]
        value_gradient = getattr(lib, f"value_gradient_stencil_{suffix}")
        value_gradient.argtypes = [p, i64, p, p, p, p, p, p, i32, i64, i64, i64, i64, p, p, i32]
        forward.restype = backward.restype = value_gradient.restype = i32
        forward, backward = getattr(lib, f"join_forward_{suffix}"), getattr(lib, f"join_backward_{suffix}")
        forward.argtypes = [p, p, i64, i64, i64, p, p, p, i32]
        backward.argtypes = [p, p, p, p, p, p, i64, i64, i64, i64, p, p, i32]
        forward.restype = backward.restype = i32
        forward = getattr(lib, f"channel_conv_forward_{suffix}")
        backward = getattr(lib, f"channel_conv_backward_{suffix}")
        forward.argtypes = [p, p, i64, i64, i64, p]
        backward.argtypes = [p, p, p, i64, i64, i64, p, p]
        forward.restype = backward.restype = i32
        forward = getattr(lib, f"light_head_forward_{suffix}")
        backward = getattr(lib, f"light_head_backward_{suffix}")
        forward.argtypes = [p, p, p, i64, i64, i64, i64, p, p]
        backward.argtypes = [p, p, p, p, p, p, i64, i64, i64, i64, p, p, p]
        forward.restype = backward.restype = i32
        forward, backward = getattr(lib, f"dsu_gates_forward_{suffix}"), getattr(lib, f"dsu_gates_backward_{suffix}")
        forward.argtypes = [p, p, p, i64, i64, i64, i32, i32, p, p]
        backward.argtypes = [p, p, p, p, p, i64, i64, i64, i32, i32, p, p, p]
        forward.restype = backward.restype = i32
    return lib
