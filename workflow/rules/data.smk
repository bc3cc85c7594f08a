# The profile's datasets: generated in the real formats (synthetic profiles), downloaded (real
# CIFAR) or checked (real ImageNet and COCO, placed by hand: the job fails with where to put them).
# The outputs are stamps (results/<profile>/data/<dataset>.json: the data's fingerprint and source),
# never the data: Snakemake deletes a job's outputs before running it (also on -F, -R and
# --delete-all-output), and a dataset placed by hand must survive every Snakemake command.
# `prepare-data` keeps data that is already in place, so a forced rerun only rewrites the stamps.

DATASETS = sorted({record.identity.dataset for record in PLAN.values()})
CIFAR_DATASETS = [d for d in DATASETS if d in gridlib.CIFAR]


if CIFAR_DATASETS:

    rule prepare_data:
        output:
            [data_stamp(d) for d in CIFAR_DATASETS],
        params:
            grid=GRID_FILE,
            profile=PROFILE,
            datasets=CIFAR_DATASETS,
        log:
            f"results/{PROFILE}/logs/prepare_data.log",
        conda:
            ENV_FILE
        shell:
            "dla-repro grid prepare-data --grid {params.grid:q} --profile {params.profile:q}"
            " --datasets {params.datasets:q} > {log:q} 2>&1"


if "imagenet" in DATASETS:

    rule prepare_imagenet:
        output:
            data_stamp("imagenet"),
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
            data_stamp("coco"),
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
