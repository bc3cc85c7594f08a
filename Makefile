# The two commands of the README:
#   make run   set up, then reproduce the embedded default (offline smoke profile) with DVC:
#              synthetic data -> Snakemake -> submitit (local) -> tables, figures, paper.pdf
#   make test  set up (Python env, one-node SLURM, LaTeX), then run the test suite (CI: .ci/run)
#   make gpu-check  on a GPU node: steps of every method, resume through the SLURM job's code, loaders
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),$(CURDIR)/.venv)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dla-repro-installed
export PATH := $(VENV)/bin:$(PATH)

.PHONY: setup slurm latex run test bench gpu-check lock
setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh $(wildcard constraints/*.txt)
	VIRTUAL_ENV=$(VENV) bash scripts/setup.sh
	touch $@

latex:
	bash scripts/install-latex.sh

slurm:
	bash workflow/slurm-local/install.sh
	bash workflow/slurm-local/start.sh

run: setup latex
	dvc repro
	@echo "reports: reports/$$(python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["profile"])')/"

# two lanes (pytest-xdist): the tests of the local SLURM cluster in one (they share it, some stop its
# daemons, and they mostly wait on the scheduler), every other test beside them
test: setup latex slurm
	$(PY) -m pytest -q -n 2 --dist loadgroup

bench: setup
	$(PY) bench/step_time.py

gpu-check: setup
	VIRTUAL_ENV=$(VENV) bash scripts/gpu-check.sh
