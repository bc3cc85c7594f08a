#!/usr/bin/env bash
# Set up the Python environment: the active virtualenv if there is one, else ./.venv.
# torch/torchvision come from the pinned CPU pair for this machine's architecture
# (constraints/cpu-<arch>.txt); on a GPU cluster use environment.yml instead (see README).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${VIRTUAL_ENV:-$PWD/.venv}"
python="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "setup: creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
arch="$(uname -m)"
constraints="constraints/cpu-$arch.txt"
if [[ ! -f "$constraints" ]]; then
  echo "setup: no pinned torch pair for architecture '$arch' (expected $constraints)" >&2
  exit 1
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
echo "setup: installing torch/torchvision ($constraints) and dla-repro into $venv"
"${pip[@]}" -c "$constraints" torch torchvision
"${pip[@]}" -c "$constraints" -e '.[dev]'
"$venv/bin/python" -c "import torch, torchvision, dlarepro; print('setup: torch', torch.__version__, '| torchvision', torchvision.__version__, '| dla-repro', dlarepro.__version__)"
