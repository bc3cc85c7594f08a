# The profile's datasets: generated synthetic CIFAR (smoke) or downloaded real CIFAR (paper).
# Outputs are files inside the dataset folders, so a prepared folder (e.g. by `dvc repro`, or
# copied by hand on a cluster) is simply used.


rule prepare_data:
    output:
        [dataset_marker(d) for d in sorted({r.dataset for r in RUNS.values()}) if d != "imagenet"],
    params:
        grid=GRID_FILE,
        profile=PROFILE,
    log:
        f"results/{PROFILE}/logs/prepare_data.log",
    conda:
        ENV_FILE
    shell:
        "dla-repro grid prepare-data --grid {params.grid} --profile {params.profile} > {log} 2>&1"
