# Shared definitions: the grid, validated against the package's schema, expanded once.
import json
import shlex

from dlarepro import grid as gridlib
from dlarepro.submit import executor_settings, slurm_for_family

validate(config, str(gridlib.schema_path()))

# --use-conda builds this environment for every rule (the same file a cluster user installs)
ENV_FILE = "../../environment.yml"

PROFILE, _ = gridlib.profile_of(config, config.get("profile"))
RUNS = gridlib.expand(config, PROFILE)
gridlib.check_run_configs(config, PROFILE)  # a bad recipe value fails here, before any job
EXECUTOR = executor_settings(config)
# `dla-repro submit` reads the same grid file Snakemake was given (the one declaring experiments)
GRID_FILE = next((f for f in map(str, workflow.configfiles) if "experiments" in (gridlib.read_yaml(f) or {})),
                 "params.yaml")


def run_outputs(experiment=None):
    """metrics.json of every run of the profile (or of one experiment)."""
    return [
        f"{gridlib.run_dir(PROFILE, run_id)}/metrics.json"
        for run_id, run in RUNS.items()
        if experiment is None or experiment in run.experiments
    ]


def dataset_marker(dataset):
    return gridlib.dataset_marker(PROFILE, dataset)


def train_inputs(wildcards):
    """The run's dataset and, for a detector, the finished ImageNet run of its backbone."""
    run = RUNS[wildcards.run_id]
    inputs = {"data": dataset_marker(run.dataset)}
    if run.backbone is not None:
        inputs["backbone"] = f"{gridlib.run_dir(PROFILE, run.backbone.run_id)}/metrics.json"
    return inputs


def slurm_options(run):
    """The profile's SLURM options for this run's family (ImageNet/COCO jobs take a whole node)."""
    return slurm_for_family(EXECUTOR, run.family)
