#!/usr/bin/env bash
# Set up the Python environment: the active virtualenv if there is one, else ./.venv.
# x86_64: the locked environment constraints/lock-x86_64.txt (exact versions + hashes, scripts/lock.sh),
# the same on CPU machines and on GPU nodes (torch 2.14.1 from PyPI is the CUDA 13 build).
# Other architectures: the pinned torch pair constraints/cpu-<arch>.txt. Conda users: environment.yml.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${VIRTUAL_ENV:-$PWD/.venv}"
python="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "setup: creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
arch="$(uname -m)"
lock="constraints/lock-$arch.txt"
constraints="constraints/cpu-$arch.txt"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if [[ -f "$lock" ]]; then
  # the locked environment: every package at its exact version, each file checked against its hash
  echo "setup: installing the locked environment ($lock) and dla-repro into $venv"
  "${pip[@]}" --require-hashes --no-deps -r "$lock"
  "${pip[@]}" --no-deps -e .
elif [[ -f "$constraints" ]]; then
  # no lock for this architecture (aarch64: torch 2.9.1, whose CPU wheels the x86_64 lock cannot name):
  # the pinned torch pair, the other dependencies resolved from pyproject.toml
  echo "setup: no lock for '$arch'; installing torch/torchvision ($constraints) and dla-repro into $venv"
  "${pip[@]}" -c "$constraints" torch torchvision
  "${pip[@]}" -c "$constraints" -e '.[dev]'
else
  echo "setup: no lock ($lock) and no pinned torch pair ($constraints) for architecture '$arch'" >&2
  exit 1
fi
"$venv/bin/python" -c "import torch, torchvision, dlarepro; print('setup: torch', torch.__version__, '| torchvision', torchvision.__version__, '| dla-repro', dlarepro.__version__)"
