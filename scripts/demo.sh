#!/usr/bin/env bash
# The main job on the bundled model: generate an image from known noise, recover its latent (decoder
# inversion by gradient descent) and its noise (exact inversion of DDIM), regenerate from the recovered
# noise, and print the report. Outputs go to runs/demo/{generated,inverted}/. Extra arguments are
# passed to `diffinv invert` (e.g. --decoder encoder, the usual shortcut, to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
diffinv="${DIFFINV_VENV:-.venv}/bin/diffinv"
prompt="a red square on a blue background"
settings=(--model tiny --prompt "$prompt" --scheduler ddim --steps 50 --guidance 3)
"$diffinv" generate "${settings[@]}" --seed 3 --out runs/demo/generated > /dev/null
"$diffinv" invert runs/demo/generated/image.png "${settings[@]}" --method exact --method-option anderson=3 \
  --decoder gradient --reference runs/demo/generated --out runs/demo/inverted "$@"
echo "wrote runs/demo/generated/ and runs/demo/inverted/ (reconstruction.png is regenerated from the recovered noise)" >&2
