#!/usr/bin/env bash
# Re-run every measurement the README and docs/ quote for the bundled model, in two lanes of one torch
# thread each (about 4 hours on a 2-core CPU: the n=16 and n=32 watermark runs and the editing bench are most of
# it). Tables and JSON go to ${OUT:-docs/measurements/MODEL_NAME}/, where git keeps them (commit them as they
# finish: a session's ignored folders do not outlive it); the decoder Pareto plot to docs/decoder_pareto.png.
# Use it after changing the bundled weights. Resumable: rerunning skips every command whose
# output is there (on the same weights only). The *_v2 runs are the previous model's side of the README's before/after table.
# MODEL=folder measures a candidate before it ships (outputs to docs/measurements/FOLDER_NAME/ unless OUT is set; the
# demo, the CLI, API, watermark and edit examples and the previous model's runs are skipped, the decoder plot
# goes to OUT/).
# SKIP="decoder decoder16 ..." leaves out the named runs (output names without .txt), e.g. the autoencoder-only
# decoder runs after a UNet-only change, or the previous model's *_v2 runs, which do not change.
# Each lane runs the issue-#12 items (probe, sampler, watermark) first, then the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1
D="${DIFFINV_VENV:-.venv}/bin/diffinv"
P="${DIFFINV_VENV:-.venv}/bin/python"
P_ABS="$(cd "$(dirname "$P")" && pwd)/python"  # for commands run from another folder
M="${MODEL:-tiny}"
if [ "$M" = tiny ]; then MDIR=src/diffinv/weights/tiny; else MDIR="$M"; fi
B="${OUT:-docs/measurements/$(basename "$MDIR")}"  # tracked by git (docs/measurements/.gitignore drops images)
PLOT=docs/decoder_pareto.png
[ "$M" = tiny ] || PLOT="$B/decoder_pareto.png"
shipped() { [ "$M" = tiny ]; }  # the runs that only make sense for the bundled model (demo, previous version)
# step NAME.txt COMMAND...: run COMMAND into $B/NAME.txt unless an earlier run finished it (resumable: the
# output is written as NAME.txt.part and renamed when the command succeeds).
step() {
  local out="$B/$1"
  shift
  case " ${SKIP:-} " in *" $(basename "$out" .txt) "*) echo "skipping $out: in SKIP" >&2; return 0 ;; esac
  if [ -s "$out" ]; then echo "skipping $out: done by an earlier run" >&2; return 0; fi
  "$@" > "$out.part" && mv "$out.part" "$out"
}
mkdir -p "$B"
# The outputs belong to one set of weights: a rerun resumes only on the weights it started on.
WEIGHTS=$(cd "$MDIR" && find . -name '*.safetensors' | sort | xargs sha256sum | sha256sum | cut -c1-16)
if [ -s "$B/weights.sha256" ] && [ "$(cat "$B/weights.sha256")" != "$WEIGHTS" ]; then
  echo "remeasure.sh: $B holds measurements of other weights ($(cat "$B/weights.sha256"), now $WEIGHTS); move it away or set OUT" >&2
  exit 2
fi
echo "$WEIGHTS" > "$B/weights.sha256"
HELD=$("$P" -c "from diffinv.bench.probe import probe_prompts; print('|'.join(probe_prompts(4)))")  # held-out captions
# page_block FILE HEADING: the first python block under the section HEADING of FILE (run as the page shows it).
page_block() { awk -v h="$2" '$0 == h {s=1; next} s && /^## / {exit} s && /^```python$/ {b=1; next} b && /^```$/ {exit} b' "$1"; }
readme_block() { page_block README.md "$1"; }
lane1() {
  shipped && step demo.txt bash scripts/demo.sh
  shipped && step cli_naive.txt "$D" invert runs/demo/generated/image.png --model "$M" --prompt "a red square on a blue background" --sampler ddim \
    --steps 50 --guidance 3 --method naive --decoder encoder --reference runs/demo/generated --out "$B/inv_naive"
  shipped && step readme_api.txt bash -c 'cd "$1" && "$2" -c "$3"' _ "$B" "$P_ABS" "$(readme_block '## Python API')"  # saves image.png
  shipped && step readme_watermark.txt "$P" -c "import diffinv; pipe = diffinv.load('tiny')
$(page_block docs/watermarks.md '## Python')
print(found.report())"
  shipped && step edit_example.txt bash -c "'$D' generate --model tiny --prompt 'a red circle on a blue background' --seed 0 --steps 50 \
    --guidance 3 --out '$B/edit/generated' > /dev/null && '$D' edit '$B/edit/generated/image.png' --model tiny \
    --source-prompt 'a red circle on a blue background' --target-prompt 'a green circle on a blue background' --guidance 3 \
    --method exact --method-option anderson=3 --mode diffedit --out '$B/edit/exact' && '$D' edit '$B/edit/generated/image.png' \
    --model tiny --source-prompt 'a red circle on a blue background' --target-prompt 'a green circle on a blue background' \
    --guidance 3 --method exact --method-option anderson=3 --mode prompt-to-prompt --mode-option local_blend=0.3 \
    --out '$B/edit/local_blend'"
  step probe.txt "$P" -m diffinv_train probe --model "$MDIR" --trajectories 4 --last 5 --json "$B/probe.json"
  step sampler.txt "$D" bench sampler-inversion --model "$M" --n 4 --samplers ddim:50,dpm++2m:10 --guidances 1,3,7.5 --prompt "$HELD" \
    --methods naive,fixed-point,exact,exact-aa --json "$B/sampler.json"
  step sampler_dpm_fine10.txt "$D" bench sampler-inversion --model "$M" --n 4 --samplers dpm++2m:10 --guidances 1,3,7.5 \
    --prompt "$HELD" --methods "exact-aa:fine_steps=10,exact-lm:fine_steps=10" --json "$B/sampler_dpm_fine10.json"
  step eval.txt "$P" -m diffinv_train evaluate --model "$MDIR" --json "$B/eval.json"
  step decoder_samples.txt "$D" bench decoder-inversion --model "$M" --frames 1,4 --iterations 20,50,100 --prompts "$HELD" \
    --methods encoder,gradient-free,gradient,forward-step --json "$B/decoder_samples.json"
  step probe_ddim75.txt "$P" -m diffinv_train probe --model "$MDIR" --trajectories 4 --last 2 --guidance 7.5 --no-inversion --branches \
    --json "$B/probe_ddim75.json"
  step probe_dpm1.txt "$P" -m diffinv_train probe --model "$MDIR" --trajectories 4 --last 2 --steps 10 --sampler dpm++2m \
    --guidance 1 --no-inversion --json "$B/probe_dpm1.json"
  step probe_dpm75.txt "$P" -m diffinv_train probe --model "$MDIR" --trajectories 4 --last 1 --steps 10 --sampler dpm++2m \
    --guidance 7.5 --no-inversion --json "$B/probe_dpm75.json"
  for g in 7.5 3; do
    step "probe_dpm${g/./}_first.txt" "$P" -m diffinv_train probe --model "$MDIR" --trajectories 4 --first 3 --last 0 --steps 10 \
      --sampler dpm++2m --guidance "$g" --no-inversion --solve --json "$B/probe_dpm${g/./}_first.json"
  done
  step watermark_known.txt "$D" bench watermark --model "$M" --n 6 --attacks clean --generation-guidance 3 --known-prompt \
    --json "$B/watermark_known.json"
  step ddim_lm.txt "$D" bench sampler-inversion --model "$M" --n 4 --samplers ddim:50 --guidances 3,7.5 --prompt "$HELD" \
    --methods naive,exact-aa,exact-lm --json "$B/ddim_lm.json"
  step editing.txt "$D" bench editing --model "$M" --n 8 --json "$B/editing.json"
  step p2p_ablation.txt "$D" bench editing --model "$M" --n 8 --guidances 7.5 --methods true-noise --photos '' --modes \
    "prompt-to-prompt,prompt-to-prompt:cross_fraction=0,self_fraction=0,prompt-to-prompt:cross_fraction=1,self_fraction=1" \
    --json "$B/p2p_ablation.json"
  shipped && step sampler_v2.txt "$D" bench sampler-inversion --model models/tiny-v2 --n 4 --samplers ddim:50,dpm++2m:10 --guidances 1,3,7.5 \
    --prompt "$HELD" --methods naive,exact-aa --json "$B/sampler_v2.json"
  shipped && step decoder_samples_v2.txt "$D" bench decoder-inversion --model models/tiny-v2 --frames 4 --iterations 20,50,100 --prompts "$HELD" \
    --methods encoder,gradient-free,gradient,forward-step --json "$B/decoder_samples_v2.json"
  true
}
lane2() {
  step wm_attacks.txt "$D" bench watermark --model "$M" --n 16 --attacks clean,jpeg,rotation,crop,blur,noise,brightness \
    --pipelines encoder+naive --json "$B/wm_attacks.json"
  step wm_dpm.txt "$D" bench watermark --model "$M" --n 16 --sampler dpm++2m --steps 10 --attacks clean \
    --pipelines encoder+naive,gradient+naive,gradient-free+naive,gradient-free+exact --json "$B/wm_dpm.json"
  step recon.txt "$D" bench reconstruction --model "$M" --images skimage,white --generated 4 --steps 50 --guidance 1 \
    --methods naive,easyinv,easyinv:preset=sdxl,renoise,fixed-point --json "$B/recon.json"
  step recon_white.txt "$D" bench reconstruction --model "$M" --images white --prompt "a red circle on a white background" --guidance 7.5 \
    --methods naive,easyinv,easyinv:preset=sdxl,renoise,renoise:noise_regularization=true --per-image \
    --json "$B/recon_white.json"
  step wm_clean64.txt "$D" bench watermark --model "$M" --n 64 --attacks clean --pipelines encoder+naive --json "$B/wm_clean64.json"  # +-0.015
  step wm_clean2.txt "$D" bench watermark --model "$M" --n 16 --attacks clean --pipelines gradient+naive,gradient-free+exact \
    --json "$B/wm_clean2.json"
  step wm_attacks_gf.txt "$D" bench watermark --model "$M" --n 16 --attacks clean,jpeg,rotation,crop,blur,noise,brightness \
    --pipelines gradient-free+naive --json "$B/wm_attacks_gf.json"   # the same images as wm_attacks (same seeds)
  # the matched-filter score with radius-4 keys (49 Fourier coefficients instead of 29): README "Tree-Ring watermarks"
  step wm_r4_attacks.txt "$D" bench watermark --model "$M" --n 16 --attacks clean,jpeg,rotation,crop,blur,noise,brightness \
    --pipelines encoder+naive --score correlation --radius 4 --json "$B/wm_r4_attacks.json"
  step wm_r4_attacks_gf.txt "$D" bench watermark --model "$M" --n 16 --attacks clean,jpeg,rotation,crop,blur,noise,brightness \
    --pipelines gradient-free+naive --score correlation --radius 4 --json "$B/wm_r4_attacks_gf.json"
  # the same two with 32 images per class (the first 16 of each class are the n=16 runs' images): the attack mean
  # of the README's before/after table, +-0.035 instead of +-0.05
  step wm_r4_attacks32.txt "$D" bench watermark --model "$M" --n 32 --attacks clean,jpeg,rotation,crop,blur,noise,brightness \
    --pipelines encoder+naive --score correlation --radius 4 --json "$B/wm_r4_attacks32.json"
  step wm_r4_attacks_gf32.txt "$D" bench watermark --model "$M" --n 32 --attacks clean,jpeg,rotation,crop,blur,noise,brightness \
    --pipelines gradient-free+naive --score correlation --radius 4 --json "$B/wm_r4_attacks_gf32.json"
  step wm_r4_dpm.txt "$D" bench watermark --model "$M" --n 16 --sampler dpm++2m --steps 10 --attacks clean \
    --pipelines encoder+naive,gradient-free+naive,gradient-free+exact --score correlation --radius 4 --json "$B/wm_r4_dpm.json"
  step wm_r4_clean64.txt "$D" bench watermark --model "$M" --n 64 --attacks clean --pipelines encoder+naive --score correlation \
    --radius 4 --json "$B/wm_r4_clean64.json"
  step decoder.txt "$D" bench decoder-inversion --model "$M" --frames 1,16 --iterations 20,50,100 --dtype float32 --video-size 64 \
    --methods encoder,gradient-free,gradient,forward-step --json "$B/decoder.json" --plot "$PLOT"
  step decoder16.txt "$D" bench decoder-inversion --model "$M" --frames 1 --iterations 20,50,100 --dtype float16 --video-size 64 \
    --methods encoder,gradient-free,forward-step --json "$B/decoder16.json"
  step decoder256.txt "$D" bench decoder-inversion --model "$M" --frames 1 --iterations 20,50,100 --dtype float32 --video-size 256 \
    --methods encoder,gradient-free,gradient,forward-step --json "$B/decoder256.json"
  step decoder_chunk4.txt "$D" bench decoder-inversion --model "$M" --frames 16 --iterations 20,50 --dtype float32 --video-size 64 --chunk-size 4 \
    --methods gradient-free,gradient,forward-step --json "$B/decoder_chunk4.json"
  shipped && step wm_v2.txt "$D" bench watermark --model models/tiny-v2 --n 16 --attacks clean --pipelines encoder+naive,gradient-free+naive \
    --json "$B/wm_v2.json"
  true
}
lane1 2> "$B/lane1.err" &
first=$!
lane2 2> "$B/lane2.err" &
second=$!
wait "$first" && wait "$second"
echo "wrote $B/" >&2
