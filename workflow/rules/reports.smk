# From finished runs to the paper's tables and figures (dla-repro report ...). Each step reads the
# outputs of the one before; only files whose content changed are rewritten.

RESULTS = f"results/{PROFILE}"
REPORTS = f"reports/{PROFILE}"


rule aggregate:
    input:
        run_outputs(),
    output:
        f"{RESULTS}/runs.csv",
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/problems.csv",
        f"{RESULTS}/headline.json",
        f"{RESULTS}/figure4.csv",
    params:
        grid=GRID_FILE,
        profile=PROFILE,
    log:
        f"{RESULTS}/logs/aggregate.log",
    conda:
        ENV_FILE
    shell:
        "dla-repro report aggregate --grid {params.grid:q} --profile {params.profile:q} > {log:q} 2>&1"


rule tables:
    input:
        f"{RESULTS}/summary.csv",
    output:
        expand(f"{REPORTS}/tables/table{{n}}.tex", n=range(1, 7)),
        f"{REPORTS}/tables/params.tex",
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
        f"{RESULTS}/summary.csv",
    output:
        expand(f"{REPORTS}/figures/{{name}}.{{ext}}", name=["figure2", "figure4", "cost"], ext=["pdf", "png"]),
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
