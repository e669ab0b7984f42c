#!/usr/bin/env bash
# A from-scratch training recipe for the bundled kind of model in one command, about 2 hours of one CPU
# thread in all (docs/bundled-model.md, "A from-scratch recipe"; its model is not the shipped one).
# Resumable: interrupt it and run the same command again. OUT (default runs/recipe) gets the checkpoints;
# the exported diffusers folder goes to OUT/export. VAE_FROM=<exported folder> skips the autoencoder stage
# (57 min) and trains the UNet on that folder's autoencoder (the shipped one was made by the same `vae` command).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/recipe}
PY=${PYTHON:-.venv/bin/python}
STEPS=3400      # the UNet's cosine schedule
PLAIN=2500      # steps before the low-noise penalties start
export OMP_NUM_THREADS=1
if [ -n "${VAE_FROM:-}" ]; then
    autoencoder=(--vae-from "$VAE_FROM")
else
    $PY -m diffinv.train vae --out "$OUT" --steps 3000
    autoencoder=()
fi
common=(--out "$OUT" --steps "$STEPS" --texture colour --probe-every 0 "${autoencoder[@]}")
$PY -m diffinv.train unet "${common[@]}" --until "$PLAIN"
$PY -m diffinv.train unet "${common[@]}" --agreement 1.0 --agreement-below 200 --monotone 10 --monotone-below 200
$PY -m diffinv.train export --out "$OUT" --to "$OUT/export"
