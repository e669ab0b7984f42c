#!/usr/bin/env bash
# The test command: set up .venv if needed, then run the whole suite on tiny models built in memory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${DIFFINV_VENV:-.venv}/bin/python" -m pytest -q "$@"
