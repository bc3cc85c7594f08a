#!/usr/bin/env bash
# make gpu-check: is this GPU node ready for the grid? (see src/dlarepro/gpucheck.py)
# Exit status: 0 every check passed, 1 a check failed, 2 no CUDA device is visible.
# Writes gpu-check.json in the current directory (--out to change); extra arguments go to the check.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then python="$VIRTUAL_ENV/bin/python"; fi
exec "$python" -m dlarepro.gpucheck "$@"
