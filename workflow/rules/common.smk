# Shared definitions: the grid (params.yaml plus the Snakemake profile and --config), validated,
# expanded and resolved once into the plan every job receives.
import json

from dlarepro import grid as gridlib
from dlarepro import layout, yamlfile
from dlarepro.submit import executor_settings, options_for_family

gridlib.normalise_executor_options(config)
gridlib.validate(config, "the workflow's config (params.yaml, the profile's executor.yaml and --config)")

# --use-conda builds this environment for every rule (the same file a cluster user installs)
ENV_FILE = "../../environment.yml"

PROFILE, _ = gridlib.profile_of(config, config.get("profile"))
PLAN = gridlib.plan(config, PROFILE)  # every run's identity and resolved config; a bad value fails here
EXECUTOR = executor_settings(config)
# `dla-repro` commands read the same grid file Snakemake was given (the one declaring experiments)
def _declares_experiments(path):
    try:
        return "experiments" in (yamlfile.read(path) or {})
    except yamlfile.YamlError:
        return False


GRID_FILE = next((f for f in map(str, workflow.configfiles) if _declares_experiments(f)), "params.yaml")


def run_outputs(experiment=None):
    """metrics.json of every run of the profile (or of one experiment)."""
    return [
        f"{layout.run_dir(PROFILE, run_id)}/metrics.json"
        for run_id, record in PLAN.items()
        if experiment is None or experiment in record.identity.experiments
    ]


def dataset_marker(dataset):
    return layout.dataset_marker(PROFILE, dataset)


def train_inputs(wildcards):
    """The run's dataset and, for a detector, the finished ImageNet run of its backbone."""
    identity = PLAN[wildcards.run_id].identity
    inputs = {"data": dataset_marker(identity.dataset)}
    if identity.backbone:
        inputs["backbone"] = f"{layout.run_dir(PROFILE, identity.backbone)}/metrics.json"
    return inputs


def run_record(wildcards):
    """The planned run as JSON: `dla-repro submit` trains exactly this (nothing is re-derived)."""
    return json.dumps(PLAN[wildcards.run_id].to_dict(), sort_keys=True)


def executor_options(wildcards):
    """The executor options of this run's family (ImageNet/COCO jobs take a whole node)."""
    return json.dumps(options_for_family(EXECUTOR, PLAN[wildcards.run_id].identity.family), sort_keys=True)
