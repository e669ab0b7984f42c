#!/usr/bin/env bash
# Re-run every measurement the README and docs/ quote for the bundled model, in two lanes of one torch
# thread each (about 100 minutes on a 2-core CPU). Tables and JSON go to ${OUT:-runs/remeasure}/; the
# decoder Pareto plot to docs/decoder_pareto.png. Use it after changing the bundled weights.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1
D="${DIFFINV_VENV:-.venv}/bin/diffinv"
P="${DIFFINV_VENV:-.venv}/bin/python"
B="${OUT:-runs/remeasure}"
mkdir -p "$B"
lane1() {
  bash scripts/demo.sh > "$B/demo.txt"
  "$D" invert runs/demo/generated/image.png --model tiny --prompt "a red square on a blue background" --scheduler ddim \
    --steps 50 --guidance 3 --method naive --decoder encoder --reference runs/demo/generated --out "$B/inv_naive" > "$B/cli_naive.txt"
  "$D" bench watermark --model tiny --n 6 --attacks clean --generation-guidance 3 --known-prompt \
    --json "$B/watermark_known.json" > "$B/watermark_known.txt"
  "$D" bench sampler-inversion --model tiny --n 1 --schedulers ddim:50,dpm++2m:10 --guidances 1,3,7.5 \
    --methods naive,fixed-point,exact,exact-aa,exact-lm --json "$B/sampler.json" > "$B/sampler.txt"
  "$D" bench watermark --model tiny --n 6 --attacks rotation,crop,brightness --json "$B/watermark_geo.json" > "$B/watermark_geo.txt"
  "$P" -m diffinv.train probe --model src/diffinv/weights/tiny --trajectories 4 --last 5 --json "$B/probe.json" > "$B/probe.txt"
  "$P" -m diffinv.train evaluate --model src/diffinv/weights/tiny --json "$B/eval.json" > "$B/eval.txt"
}
lane2() {
  "$D" bench reconstruction --model tiny --images skimage,white --generated 4 --steps 50 --guidance 1 \
    --methods naive,easyinv,easyinv:preset=sdxl,renoise,fixed-point --json "$B/recon.json" > "$B/recon.txt"
  "$D" bench reconstruction --model tiny --images white --prompt "a red circle on a white background" --guidance 7.5 \
    --methods naive,easyinv,easyinv:preset=sdxl,renoise,renoise:noise_regularization=true --per-image \
    --json "$B/recon_white.json" > "$B/recon_white.txt"
  "$D" bench decoder-inversion --model tiny --frames 1,16 --iterations 20,50,100 --dtype float32 --video-size 64 \
    --methods encoder,gradient-free,gradient,forward-step --json "$B/decoder.json" --plot docs/decoder_pareto.png > "$B/decoder.txt"
  "$D" bench decoder-inversion --model tiny --frames 1 --iterations 20,50,100 --dtype float16 --video-size 64 \
    --methods encoder,gradient-free,forward-step --json "$B/decoder16.json" > "$B/decoder16.txt"
  "$D" bench decoder-inversion --model tiny --frames 1 --iterations 20,50,100 --dtype float32 --video-size 256 \
    --methods encoder,gradient-free,gradient,forward-step --json "$B/decoder256.json" > "$B/decoder256.txt"
  "$D" bench decoder-inversion --model tiny --frames 16 --iterations 20,50 --dtype float32 --video-size 64 --chunk-size 4 \
    --methods gradient-free,gradient,forward-step --json "$B/decoder_chunk4.json" > "$B/decoder_chunk4.txt"
  "$D" bench watermark --model tiny --n 6 --attacks clean,jpeg,blur,noise --json "$B/watermark.json" > "$B/watermark.txt"
  "$D" bench editing --model tiny --n 8 --json "$B/editing.json" > "$B/editing.txt"
}
lane1 2> "$B/lane1.err" &
first=$!
lane2 2> "$B/lane2.err" &
second=$!
wait "$first" && wait "$second"
echo "wrote $B/" >&2
