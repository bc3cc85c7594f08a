"""What every dataset of the data layer shares: the error types, the ``SYNTHETIC`` marker that
flags generated stand-ins, and the per-sample seed that makes augmentation a function of
(seed, epoch, index)."""

from __future__ import annotations

from pathlib import Path

MARKER = "SYNTHETIC"


class DatasetError(Exception):
    """Base of every data-layer error: the CLI prints it as one line, without a traceback."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset folder or file is missing. The message names the path and how to get the data."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__(message)
        self.path = None if path is None else Path(path)


class CorruptDatasetError(DatasetError, ValueError):
    """A dataset file exists but does not hold what the format promises (the message says what)."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__(message)
        self.path = None if path is None else Path(path)


class DatasetDownloadError(DatasetError, RuntimeError):
    """The download failed, most often because the machine has no internet access."""


def read_marker(folder: str | Path) -> dict[str, str] | None:
    """The ``key: value`` lines of ``folder/SYNTHETIC`` (comments skipped), or None if it is absent.

    The marker is how downstream artifacts know the data is synthetic, so its presence alone counts:
    an empty or free-form marker still returns a (possibly empty) dict, never None.
    """
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    fields = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip()] = value.strip()
    return fields


def split_key(key: int | tuple[int, int], epoch: int) -> tuple[int, int]:
    """(epoch, index) of a dataset key: an ``(epoch, index)`` pair, or an index of ``epoch``."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(epoch), int(key)


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One SplitMix64 step: a cheap bijective mixer, so nearby inputs give unrelated outputs."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s augmentation in ``epoch`` of a run with ``seed`` (63 bits).

    Chained SplitMix64 rather than a linear formula, so (epoch, index) pairs never collide for any
    dataset size, and the result fits ``torch.Generator.manual_seed``.
    """
    return _splitmix64(seed_prefix(seed, epoch) ^ (index & _MASK64)) >> 1


def seed_prefix(seed: int, epoch: int) -> int:
    """The part of :func:`sample_seed` shared by every index of one epoch (vectorised code mixes the
    index in itself: :func:`dlarepro.data.cifar_batches.sample_seeds`)."""
    return _splitmix64(_splitmix64(seed & _MASK64) ^ (epoch & _MASK64))
