# Shared definitions: the grid (params.yaml plus the Snakemake profile and --config), validated,
# expanded and resolved once into the plan every job receives.
import json

from dlarepro import grid as gridlib
from dlarepro import layout, yamlfile
import os

from dlarepro.submit import WORKFLOW_EXECUTOR, executor_settings

gridlib.normalise_executor_options(config)
gridlib.validate(config, "the workflow's config (params.yaml, the profile's executor.yaml and --config)")

# --use-conda builds this environment for every rule (the same file a cluster user installs)
ENV_FILE = "../../environment.yml"

PROFILE, _ = gridlib.profile_of(config, config.get("profile"))
PLAN = gridlib.plan(config, PROFILE)  # every run's identity and resolved config; a bad value fails here
# The executor settings reach every `dla-repro submit` through the environment, not as job params:
# the params are a rerun trigger (a run whose planned config changed is checked again), and a new
# partition or poll interval must not count as a change of every finished run.
os.environ[WORKFLOW_EXECUTOR] = json.dumps(executor_settings(config), sort_keys=True)
# `dla-repro` commands read the same grid file Snakemake was given (the one declaring experiments)
def _declares_experiments(path):
    try:
        return "experiments" in (yamlfile.read(path) or {})
    except yamlfile.YamlError:
        return False


GRID_FILE = next((f for f in map(str, workflow.configfiles) if _declares_experiments(f)), "params.yaml")


def run_outputs(experiment=None):
    """The done stamp of every run of the profile (or of one experiment): Snakemake's outputs are
    stamps, never the run folders, so no forced rerun or --delete-all-output deletes a finished run."""
    return [
        layout.done_stamp(PROFILE, run_id)
        for run_id, record in PLAN.items()
        if experiment is None or experiment in record.identity.experiments
    ]


def data_stamp(dataset):
    return layout.data_stamp(PROFILE, dataset)


def train_inputs(wildcards):
    """The run's dataset stamp and, for a detector, the done stamp of its backbone's ImageNet run."""
    identity = PLAN[wildcards.run_id].identity
    inputs = {"data": data_stamp(identity.dataset)}
    if identity.backbone:
        inputs["backbone"] = layout.done_stamp(PROFILE, identity.backbone)
    return inputs


def run_record(wildcards):
    """The planned run as JSON: `dla-repro submit` trains exactly this (nothing is re-derived)."""
    return json.dumps(PLAN[wildcards.run_id].to_dict(), sort_keys=True)
