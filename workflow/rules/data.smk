# The profile's datasets: generated in the real formats (synthetic profiles), downloaded (real
# CIFAR) or checked (real ImageNet and COCO, placed by hand: the job fails with where to put them).
# Outputs are files or folders inside the dataset folders, so a prepared folder (e.g. by
# `dvc repro`, or copied by hand on a cluster) is simply used.

DATASETS = sorted({record.identity.dataset for record in PLAN.values()})
CIFAR_DATASETS = [d for d in DATASETS if d in gridlib.CIFAR]


if CIFAR_DATASETS:

    rule prepare_data:
        output:
            [dataset_marker(d) for d in CIFAR_DATASETS],
        params:
            grid=GRID_FILE,
            profile=PROFILE,
            datasets=" ".join(CIFAR_DATASETS),
        log:
            f"results/{PROFILE}/logs/prepare_data.log",
        conda:
            ENV_FILE
        shell:
            "dla-repro grid prepare-data --grid {params.grid:q} --profile {params.profile:q}"
            " --datasets {params.datasets} > {log:q} 2>&1"


if "imagenet" in DATASETS:

    rule prepare_imagenet:
        output:
            directory(dataset_marker("imagenet")),
        params:
            grid=GRID_FILE,
            profile=PROFILE,
        log:
            f"results/{PROFILE}/logs/prepare_imagenet.log",
        conda:
            ENV_FILE
        shell:
            "dla-repro grid prepare-data --grid {params.grid:q} --profile {params.profile:q} --datasets imagenet"
            " > {log:q} 2>&1"


if "coco" in DATASETS:

    rule prepare_coco:
        output:
            dataset_marker("coco"),
        params:
            grid=GRID_FILE,
            profile=PROFILE,
        log:
            f"results/{PROFILE}/logs/prepare_coco.log",
        conda:
            ENV_FILE
        shell:
            "dla-repro grid prepare-data --grid {params.grid:q} --profile {params.profile:q} --datasets coco"
            " > {log:q} 2>&1"
