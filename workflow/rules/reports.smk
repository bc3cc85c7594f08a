# From finished runs to the paper's tables and figures (dla-repro report ...). Each step reads the
# outputs of the one before; only files whose content changed are rewritten. The files come from
# the registry of tables and figures (one module each in src/dlarepro/reports/{tables,figures}/);
# `claims` puts a verdict on every claim of the paper (claims.csv, which the claims table reads).
from dlarepro.reports import registry

RESULTS = f"results/{PROFILE}"
REPORTS = f"reports/{PROFILE}"


rule aggregate:
    input:
        run_outputs(),
    output:
        [f"{RESULTS}/{name}" for name in registry.aggregate_files()],
    params:
        grid=GRID_FILE,
        profile=PROFILE,
    log:
        f"{RESULTS}/logs/aggregate.log",
    conda:
        ENV_FILE
    shell:
        "dla-repro report aggregate --grid {params.grid:q} --profile {params.profile:q} > {log:q} 2>&1"


rule claims:
    input:
        [f"{RESULTS}/{name}" for name in registry.aggregate_files()],
    output:
        [f"{RESULTS}/{name}" for name in registry.claims_files()],
    params:
        grid=GRID_FILE,
        profile=PROFILE,
    log:
        f"{RESULTS}/logs/claims.log",
    conda:
        ENV_FILE
    shell:
        "dla-repro report claims --grid {params.grid:q} --profile {params.profile:q} > {log:q} 2>&1"


rule tables:
    input:
        [f"{RESULTS}/{name}" for name in registry.table_inputs()],
    output:
        [f"{REPORTS}/tables/{name}" for name in registry.table_files()],
    params:
        grid=GRID_FILE,
        profile=PROFILE,
    log:
        f"{RESULTS}/logs/tables.log",
    conda:
        ENV_FILE
    shell:
        "dla-repro report tables --grid {params.grid:q} --profile {params.profile:q} > {log:q} 2>&1"


rule figures:
    input:
        [f"{RESULTS}/{name}" for name in registry.figure_inputs()],
    output:
        [f"{REPORTS}/figures/{name}" for name in registry.figure_files()],
    params:
        grid=GRID_FILE,
        profile=PROFILE,
    log:
        f"{RESULTS}/logs/figures.log",
    conda:
        ENV_FILE
    shell:
        "dla-repro report figures --grid {params.grid:q} --profile {params.profile:q} > {log:q} 2>&1"


rule paper:
    input:
        rules.tables.output,
        rules.figures.output,
    output:
        f"{REPORTS}/paper.tex",
    params:
        grid=GRID_FILE,
        profile=PROFILE,
    log:
        f"{RESULTS}/logs/paper.log",
    conda:
        ENV_FILE
    shell:
        "dla-repro report paper --grid {params.grid:q} --profile {params.profile:q} > {log:q} 2>&1"


rule paper_pdf:
    input:
        f"{REPORTS}/paper.tex",
    output:
        f"{REPORTS}/paper.pdf",
    params:
        grid=GRID_FILE,
        profile=PROFILE,
    log:
        f"{RESULTS}/logs/paper_pdf.log",
    conda:
        ENV_FILE
    shell:
        "dla-repro report paper --compile --grid {params.grid:q} --profile {params.profile:q} > {log:q} 2>&1"
