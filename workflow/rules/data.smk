# The profile's datasets: generated synthetic CIFAR (smoke) or downloaded real CIFAR (paper).
# Outputs are files inside the dataset folders, so a prepared folder (e.g. by `dvc repro`, or
# copied by hand on a cluster) is simply used.


rule prepare_data:
    output:
        [dataset_marker(d) for d in sorted({r.dataset for r in RUNS.values()}) if d != "imagenet"],
    log:
        f"results/{PROFILE}/logs/prepare_data.log",
    shell:
        "dla-repro grid prepare-data --grid {GRID_FILE} --profile {PROFILE} > {log} 2>&1"
