# One job per run: `dla-repro submit` receives the planned run (identity and resolved config),
# writes run.yaml into the run folder, submits it through the workflow's executor (SLURM, local or
# debug; settings from the environment, see common.smk), records the job id (a restarted workflow
# re-attaches to a job still running) and waits.
# The output is the run's done stamp, never the run folder: Snakemake deletes the outputs of
# failed jobs and of forced reruns, and checkpoints and finished runs must survive both. A rerun of
# a finished run costs a second: submit finds metrics.json and trains nothing, unless the folder is
# stale (other config or data), which it then moves to results/<profile>/superseded/.
# The params are the planned run: with the `params` rerun trigger (profiles), an edit of a recipe
# or of the overrides reruns exactly the runs it changes. A COCO run's backbone is initialised from
# its ImageNet run, an upstream node of the DAG.


wildcard_constraints:
    run_id="[A-Za-z0-9_.-]+",


rule train:
    input:
        unpack(train_inputs),
    output:
        layout.done_stamp(PROFILE, "{run_id}"),
    params:
        record=run_record,
    resources:
        gpu_jobs=1,
    log:
        f"results/{PROFILE}/logs/train/{{run_id}}.log",
    conda:
        ENV_FILE
    shell:
        "dla-repro submit --record {params.record:q} --done {output:q} 2> >(tee {log:q} >&2)"
