"""Where a profile's data, runs and reports live, relative to the project folder."""

from __future__ import annotations

#: a file or folder inside a dataset's data root that exists once the dataset is in place
DATASET_MARKERS = {"cifar10": "cifar-10-batches-py/batches.meta", "cifar100": "cifar-100-python/meta",
                   "imagenet": "train", "coco": "coco/annotations/instances_train2017.json"}


def data_root(profile: str) -> str:
    """Where a profile's datasets live (DVC output)."""
    return f"data/{profile}"


def dataset_root(profile: str, dataset: str) -> str:
    """The ``data_root`` a run of ``dataset`` reads (ImageNet: the folder holding train/ and val/)."""
    return f"{data_root(profile)}/imagenet" if dataset == "imagenet" else data_root(profile)


def dataset_marker(profile: str, dataset: str) -> str:
    """A file that exists once the profile's copy of ``dataset`` is in place."""
    return f"{dataset_root(profile, dataset)}/{DATASET_MARKERS[dataset]}"


def results_root(profile: str) -> str:
    return f"results/{profile}"


def runs_root(profile: str) -> str:
    return f"{results_root(profile)}/runs"


def run_dir(profile: str, run_id: str) -> str:
    return f"{runs_root(profile)}/{run_id}"


def reports_root(profile: str) -> str:
    return f"reports/{profile}"


def data_stamp(profile: str, dataset: str) -> str:
    """Written by ``grid prepare-data`` once ``dataset`` is in place: its fingerprint and source.
    The workflow's data rules declare these stamps as outputs, never the (possibly hand-placed)
    data itself, so no Snakemake or DVC command can delete a dataset."""
    return f"{results_root(profile)}/data/{dataset}.json"


def done_stamp(profile: str, run_id: str) -> str:
    """Written by ``dla-repro submit`` once a run is finished: the workflow's output for the run
    (a forced rerun deletes the stamp, never the run folder)."""
    return f"{results_root(profile)}/done/{run_id}.json"

