# The experiment DAG: one training job per run of the declared grid (params.yaml), each submitted
# through submitit (SLURM on a cluster, a local process otherwise), then the reports.
#
#   snakemake --profile workflow/profiles/local                      # this machine, smoke profile
#   snakemake --profile workflow/profiles/slurm --config profile=paper
#   snakemake -n --config profile=paper                              # what would run
#   snakemake runs / paper_pdf                                       # only the runs / also compile
from snakemake.utils import min_version

min_version("9.19")

configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/reports.smk"


rule all:
    default_target: True
    input:
        f"reports/{PROFILE}/paper.tex",


rule runs:
    input:
        run_outputs(),
