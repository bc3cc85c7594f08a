# The two commands of the README:
#   make run   set up, then run the main job on the embedded default (offline smoke profile)
#   make test  set up, then run the test suite (what CI runs: .ci/run)
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),$(CURDIR)/.venv)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dla-repro-installed

.PHONY: setup run test bench
setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh $(wildcard constraints/*.txt)
	VIRTUAL_ENV=$(VENV) bash scripts/setup.sh
	touch $@

run: setup
	$(VENV)/bin/dla-repro model-info --table

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/step_time.py
