#!/usr/bin/env bash
# Build the documentation site into site/ (or the folder given) with `mkdocs build --strict`: a broken link,
# a missing page or an API name that does not resolve fails the build. Installs the docs extra into the
# virtual environment first if mkdocs is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${DIFFINV_VENV:-.venv}/bin/python"
[ -x "$python" ] || bash scripts/setup.sh
if ! "$python" -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null; then
  "$python" -m pip install --quiet -e ".[docs]"
fi
"$python" scripts/render_tables.py --check
exec "$python" -m mkdocs build --strict --site-dir "${1:-site}"
