#!/usr/bin/env bash
# The bundled model `tiny` (its sixth version) from scratch in one command: 2.96 hours of one CPU thread as
# measured, under the 3 hours issue #12 allows (docs/bundled-model.md, "The 3-hour recipe"):
#   1. the autoencoder (`vae --steps 3000 --latent-channels 4`, 57 min);
#   2. a UNet and text encoder on plain scenes (`unet --steps 3500`, 70-80 min), exported to OUT/base;
#   3. one fine-tune of it (1200 steps, 40 min) with colour textures, the agreement loss and the
#      x0-Jacobian penalty below t=200, exported to OUT/export.
# Stages 1-2 are the commands that made the third version of `tiny` (its files: commit 0535f9a).
# Resumable: interrupt it and run the same command again. OUT defaults to runs/recipe.
# VAE_FROM=<exported folder> skips stage 1 (stage 2 trains on that folder's autoencoder);
# BASE_FROM=<exported folder> skips stages 1-2 (stage 3 fine-tunes that folder's weights).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/recipe}
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1
BASE=${BASE_FROM:-$OUT/base}
if [ -z "${BASE_FROM:-}" ]; then
    if [ -n "${VAE_FROM:-}" ]; then
        autoencoder=(--vae-from "$VAE_FROM")
    else
        $PY -m diffinv_train vae --out "$OUT" --steps 3000 --latent-channels 4
        autoencoder=()
    fi
    $PY -m diffinv_train unet --out "$OUT" --steps 3500 --probe-every 0 "${autoencoder[@]}"
    $PY -m diffinv_train export --out "$OUT" --to "$BASE"
fi
$PY -m diffinv_train unet --init-from "$BASE" --out "$OUT/finetune" --steps 1200 --lr 2e-4 --probe-every 0 \
    --texture colour --agreement 1.0 --agreement-below 200 --monotone 20 --monotone-below 200
$PY -m diffinv_train export --out "$OUT/finetune" --to "$OUT/export"
