#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv with torch 2.13.0 (CPU build) and diffinv installed.
# Safe to run again: it reinstalls only when pyproject.toml changed. DIFFINV_VENV picks another folder.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${DIFFINV_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  # Torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
  "$venv/bin/python" -m pip install --quiet "torch==2.13.0"
fi
stamp="$venv/.diffinv-installed"
digest="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  "$venv/bin/python" -m pip install --quiet -e ".[test]"
  echo "$digest" > "$stamp"
fi
