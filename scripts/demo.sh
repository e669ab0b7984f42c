#!/usr/bin/env bash
# The main job on the bundled model: generate an image from known noise, invert it, print the report.
# Outputs go to runs/demo/ (generated/ and inverted/). Extra arguments are passed to `diffinv invert`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
diffinv="${DIFFINV_VENV:-.venv}/bin/diffinv"
prompt="a red square on a blue background"
"$diffinv" generate --model tiny --prompt "$prompt" --seed 3 --scheduler dpm++2m --steps 10 --out runs/demo/generated > /dev/null
"$diffinv" invert runs/demo/generated/image.png --model tiny --prompt "$prompt" --scheduler dpm++2m --steps 10 \
  --reference runs/demo/generated --out runs/demo/inverted "$@"
echo "wrote runs/demo/generated/ and runs/demo/inverted/" >&2
