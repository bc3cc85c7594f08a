"""CIFAR batches without a per-image Python loop: the split held as one uint8 tensor (on the GPU
when the run trains on one), each batch's crops and flips applied with one gather.

The augmentation is the one :meth:`dlarepro.data.cifar.CifarDataset.augmentation` draws per sample:
``torch.Generator().manual_seed(sample_seed(seed, epoch, index))``, then ``randint(0, 9)`` twice
(top, left) and ``rand(1) < 0.5`` (flip). Seeding a generator per image is what made that path slow
(about 20k images/s). Here the same three draws are computed for many samples at once: torch's CPU
generator is MT19937 seeded with the low 32 bits of the seed, ``randint(0, n)`` returns the next
32-bit output modulo n, and ``rand(1)`` compares its low 24 bits scaled by 2^-24, so the first three
outputs of MT19937 for every seed, computed with numpy array arithmetic, give the same crops and flips
bit for bit. :func:`generator_matches` re-checks that against torch itself at first use (a torch that
changed its generator would fall back to the per-sample draws, never give other augmentations).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from .common import seed_prefix

PAD = 4
SIZE = 32
_INIT_MULTIPLIER = np.uint32(1812433253)
_MATRIX_A = np.uint32(0x9908B0DF)
_M = 397  # MT19937's middle word


def sample_seeds(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
    """``sample_seed(seed, epoch, i)`` for every i of ``indices`` (uint64), with numpy's wrapping arithmetic."""
    prefix = seed_prefix(seed, epoch)
    with np.errstate(over="ignore"):
        x = np.uint64(prefix) ^ np.asarray(indices, dtype=np.uint64)
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x >> np.uint64(1)


def _temper(y: np.ndarray) -> np.ndarray:
    y = y ^ (y >> np.uint32(11))
    y = y ^ ((y << np.uint32(7)) & np.uint32(0x9D2C5680))
    y = y ^ ((y << np.uint32(15)) & np.uint32(0xEFC60000))
    return y ^ (y >> np.uint32(18))


def first_outputs(seeds: np.ndarray, count: int = 3) -> list[np.ndarray]:
    """The first ``count`` (<= 3) 32-bit outputs of MT19937 seeded like ``torch.Generator.manual_seed``."""
    x = (np.asarray(seeds, dtype=np.uint64) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    state = {0: x}
    with np.errstate(over="ignore"):
        for j in range(1, _M + count):  # the init recurrence; only words 0..count and 397.. are needed
            x = _INIT_MULTIPLIER * (x ^ (x >> np.uint32(30))) + np.uint32(j)
            if j <= count or j >= _M:
                state[j] = x
    outputs = []
    for i in range(count):  # the first twist, for the words read first
        y = (state[i] & np.uint32(0x80000000)) | (state[i + 1] & np.uint32(0x7FFFFFFF))
        word = state[i + _M] ^ (y >> np.uint32(1)) ^ np.where(y & np.uint32(1), _MATRIX_A, np.uint32(0))
        outputs.append(_temper(word))
    return outputs


def augmentations(seed: int, epoch: int, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, ...]:
    """(top, left, flip) arrays for ``indices``: what CifarDataset.augmentation draws, sample by sample."""
    y0, y1, y2 = first_outputs(sample_seeds(seed, epoch, np.asarray(indices, dtype=np.int64)))
    span = np.uint32(2 * PAD + 1)
    flip = (y2 & np.uint32(0xFFFFFF)) < np.uint32(1 << 23)  # rand(1) = low 24 bits * 2^-24 < 0.5
    return (y0 % span).astype(np.int64), (y1 % span).astype(np.int64), flip


_CHECKED: dict[str, bool] = {}


def generator_matches() -> bool:
    """Whether this torch's generator draws what :func:`augmentations` computes (checked once)."""
    if "ok" not in _CHECKED:
        from .cifar import CifarDataset

        probe = CifarDataset(np.zeros((1, 32, 32, 3), np.uint8), np.zeros(1, np.int64), train=True, seed=12345)
        probe.set_epoch(7)
        indices = [0, 1, 2, 3, 1000, 49_999, 2**31 + 5]
        top, left, flip = augmentations(12345, 7, indices)
        _CHECKED["ok"] = all(probe.augmentation(i) == (int(t), int(u), bool(f))
                             for i, t, u, f in zip(indices, top, left, flip))
    return _CHECKED["ok"]


def per_sample_augmentations(dataset, epoch: int, indices: Sequence[int]) -> tuple[np.ndarray, ...]:
    """The slow reference: CifarDataset.augmentation for each index."""
    saved = dataset.epoch
    dataset.set_epoch(epoch)
    try:
        drawn = [dataset.augmentation(int(i)) for i in indices]
    finally:
        dataset.set_epoch(saved)
    top, left, flip = zip(*drawn) if drawn else ((), (), ())
    return np.asarray(top, np.int64), np.asarray(left, np.int64), np.asarray(flip, bool)


def normaliser(mean: Sequence[float], std: Sequence[float], device):
    """uint8 [B, C, H, W] -> float32 ``(x / 255 - mean) / std``: the float32 operations of ToTensor and
    Normalize, in their order, so the bits equal the per-sample path. Divisors are tensors on the
    device: CUDA turns a Python-number divisor into a multiplication by its reciprocal, which may
    differ in the last bit."""
    scale = torch.tensor(255.0, dtype=torch.float32, device=device)
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return lambda images: images.to(torch.float32).div(scale).sub_(m).div_(s)


class CifarBatches:
    """A CIFAR split on ``device``: ``epoch(e, index_lists)`` yields (images, labels) there.

    Training batches are padded by 4, cropped and flipped as CifarDataset does it; test batches are
    the images as they are. The result equals stacking ``dataset[i]`` bit for bit.
    """

    def __init__(self, dataset, device: torch.device | str = "cpu"):
        from .cifar import CIFAR_MEAN, CIFAR_STD

        self.dataset, self.device = dataset, torch.device(device)
        images = dataset.images.permute(0, 3, 1, 2)  # uint8 [N, 3, 32, 32]
        padded = torch.nn.functional.pad(images, (PAD, PAD, PAD, PAD))  # zeros, like RandomCrop's fill
        # the split and its mirror image in one uint8 buffer: a flipped crop at ``left`` is the crop of
        # the mirrored image at ``2 * PAD - left``, so flips need no second pass
        self.count = len(padded)
        flat = torch.cat([padded, padded.flip(-1)]).reshape(-1).to(self.device)
        # every 32-byte run of the buffer as a row (a strided view, no copy): a crop is 96 such rows
        self.rows = torch.as_strided(flat, (flat.numel() - SIZE + 1, SIZE), (1, 1))
        self.labels = torch.from_numpy(dataset.labels).to(self.device)
        self.normalise = normaliser(CIFAR_MEAN, CIFAR_STD, self.device)
        self.side = SIZE + 2 * PAD
        self.image_stride = 3 * self.side * self.side
        rows = torch.arange(3).view(3, 1) * self.side * self.side + torch.arange(SIZE).view(1, SIZE) * self.side
        self.row_offsets = rows.view(1, 3 * SIZE).to(self.device)  # where a crop's rows start, from its corner

    def __len__(self) -> int:
        return len(self.labels)

    def gather(self, indices: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, 32, 32]: the crops (mirrored where ``flip``) of ``indices``, one ``index_select``."""
        image = indices + flip.long() * self.count
        left = torch.where(flip, 2 * PAD - left, left)
        corner = image * self.image_stride + top * self.side + left
        starts = (corner.view(-1, 1) + self.row_offsets).view(-1)
        return self.rows.index_select(0, starts).view(len(indices), 3, SIZE, SIZE)

    def epoch(self, epoch: int, index_lists: Sequence[Sequence[int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(normalised float32 images, labels) on the device for each batch of ``index_lists``."""
        flat = np.fromiter((i for b in index_lists for i in b), dtype=np.int64)
        if self.dataset.train:
            drawn = (augmentations(self.dataset.seed, epoch, flat) if generator_matches()
                     else per_sample_augmentations(self.dataset, epoch, flat))
        else:
            drawn = (np.full(len(flat), PAD), np.full(len(flat), PAD), np.zeros(len(flat), bool))
        top, left, flip = (torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in drawn)
        indices = torch.from_numpy(flat).to(self.device)
        start = 0
        for batch in index_lists:
            part = slice(start, start + len(batch))
            start += len(batch)
            images = self.gather(indices[part], top[part], left[part], flip[part])
            yield self.normalise(images), self.labels[indices[part]]
