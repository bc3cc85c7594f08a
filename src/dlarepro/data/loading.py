"""DataLoaders that live as long as the run: persistent workers, pinned memory on CUDA, and batches
that name their epoch.

A persistent worker keeps its copy of the dataset for the whole run, so it never sees a
``set_epoch`` call made in the trainer. :class:`EpochBatches` therefore hands the loader
``(epoch, index)`` keys, which every dataset of :mod:`dlarepro.data` accepts: augmentation stays a
function of (seed, epoch, index), whatever the number of workers, and the batch list is replaced
each epoch (from the resume point) without restarting the workers.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch


class EpochBatches(torch.utils.data.Sampler):
    """A batch sampler whose batches are set per epoch, as lists of ``(epoch, index)`` keys."""

    def __init__(self):
        super().__init__()
        self.batches: list[list[tuple[int, int]]] = []

    def set(self, epoch: int, batches: Sequence[Sequence[int]]) -> None:
        self.batches = [[(epoch, int(i)) for i in batch] for batch in batches]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Uint8Items(torch.utils.data.Dataset):
    """The dataset's uint8 images (``load_uint8``): normalised later, batched, on the training device."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return self.dataset.load_uint8(key)


class EpochLoader:
    """One DataLoader for the whole run; ``epoch(e, batches)`` iterates the batches of epoch ``e``.

    ``workers`` processes (persistent; none: in the trainer's process), pinned host memory when the
    batches go to a GPU. A private generator seeds the workers, so the global RNG, which the
    checkpoint carries, is never drawn from.
    """

    def __init__(self, dataset, workers: int, pin_memory: bool, collate_fn: Callable[[list[Any]], Any] | None = None):
        self.sampler = EpochBatches()
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=self.sampler, num_workers=workers, persistent_workers=workers > 0,
            pin_memory=pin_memory, collate_fn=collate_fn, generator=torch.Generator().manual_seed(0),
            prefetch_factor=4 if workers > 0 else None)

    def epoch(self, epoch: int, batches: Sequence[Sequence[int]]):
        self.sampler.set(epoch, batches)
        return iter(self.loader)


class NormalisedBatches:
    """(normalised float32 images, labels) on ``device`` from a dataset's uint8 images, loaded by
    ``workers`` persistent processes; the float conversion and normalisation run batched on the device."""

    def __init__(self, dataset, device: torch.device, workers: int):
        from .cifar_batches import normaliser

        self.device = device
        self.loader = EpochLoader(Uint8Items(dataset), workers, pin_memory=device.type == "cuda")
        self.normalise = normaliser(*dataset.normalisation, device)

    def epoch(self, epoch: int, batches: Sequence[Sequence[int]]):
        for images, labels in self.loader.epoch(epoch, batches):
            yield (self.normalise(images.to(self.device, non_blocking=True)),
                   labels.to(self.device, non_blocking=True))


def image_batches(dataset, device: torch.device, workers: int):
    """The fastest exact input pipeline for a classification dataset: CIFAR splits held on the device
    (:class:`~dlarepro.data.cifar_batches.CifarBatches`), anything else through worker processes."""
    from .cifar import CifarDataset

    if isinstance(dataset, CifarDataset) and dataset.transform is None:
        from .cifar_batches import CifarBatches

        return CifarBatches(dataset, device)
    return NormalisedBatches(dataset, device, workers)
