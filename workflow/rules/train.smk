# One job per run: `dla-repro submit` validates the run, submits it through submitit (SLURM, local
# or debug executor from the profile), records the job id in the run folder (a restarted workflow
# re-attaches to a job still running) and waits. Only metrics.json is a declared output:
# Snakemake deletes the outputs of failed jobs, and checkpoints must survive a failure.
# A COCO run's backbone is initialised from its ImageNet run, an upstream node of the DAG.


wildcard_constraints:
    run_id="[A-Za-z0-9_.-]+",


rule train:
    input:
        unpack(train_inputs),
    output:
        f"results/{PROFILE}/runs/{{run_id}}/metrics.json",
    params:
        grid=GRID_FILE,
        profile=PROFILE,
        executor=EXECUTOR["executor"],
        slurm=lambda wc: shlex.quote(json.dumps(slurm_options(RUNS[wc.run_id]))),
        poll=EXECUTOR["poll_seconds"],
    resources:
        gpu_jobs=1,
    log:
        f"results/{PROFILE}/logs/train/{{run_id}}.log",
    conda:
        ENV_FILE
    shell:
        "dla-repro submit {wildcards.run_id} --grid {params.grid} --profile {params.profile} --executor {params.executor}"
        " --slurm {params.slurm} --poll-seconds {params.poll} 2> >(tee {log} >&2)"
