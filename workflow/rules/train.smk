# One job per run: `dla-repro submit` receives the planned run (identity and resolved config),
# writes run.yaml into the run folder, submits it through the profile's executor (SLURM, local or
# debug), records the job id (a restarted workflow re-attaches to a job still running) and waits.
# Only metrics.json is a declared output: Snakemake deletes the outputs of failed jobs, and
# checkpoints must survive a failure. A COCO run's backbone is initialised from its ImageNet run,
# an upstream node of the DAG.


wildcard_constraints:
    run_id="[A-Za-z0-9_.-]+",


rule train:
    input:
        unpack(train_inputs),
    output:
        f"results/{PROFILE}/runs/{{run_id}}/metrics.json",
    params:
        record=run_record,
        executor=EXECUTOR["executor"],
        options=executor_options,
        poll=EXECUTOR["poll_seconds"],
    resources:
        gpu_jobs=1,
    log:
        f"results/{PROFILE}/logs/train/{{run_id}}.log",
    conda:
        ENV_FILE
    shell:
        "dla-repro submit --record {params.record:q} --executor {params.executor:q} --options {params.options:q}"
        " --poll-seconds {params.poll:q} 2> >(tee {log:q} >&2)"
