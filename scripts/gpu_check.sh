#!/usr/bin/env bash
# Everything that needs a GPU, in under 8 minutes on one: the GPU-marked tests (CPU parity and round trips on
# CUDA in float32, float16 and bfloat16; CUDA peak memory; a real out-of-memory), then `diffinv bench
# full-size` in float16 on SD 2.1-base with a full 50-step naive and exact DDIM inversion of one image against
# the diffusers inverse-scheduler loop. Outputs land in $OUT (default runs/gpu_check/): gpu_tests.txt,
# full_size_fp16.txt (the table, with the GPU's name) and full_size_fp16.json.
# Usage: scripts/gpu_check.sh [python]   (from the repository root; the default python is .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:-.venv/bin/python}"
out="${OUT:-runs/gpu_check}"
mkdir -p "$out"
"$python" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("error: gpu_check.sh needs a CUDA GPU; torch sees none")
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY
start=$SECONDS
echo "== GPU-marked tests"
"$python" -m pytest -q -m gpu tests 2>&1 | tee "$out/gpu_tests.txt"
echo "== bench full-size, float16, SD 2.1-base (50-step naive and exact inversion against diffusers)"
# float16; frames 1 and 4 (all at once and in chunks of 1), 20 decoder iterations, smoke at 512 px; the
# inversion part last, so a run stopped by the timeout keeps the other parts in the JSON
timeout 420 "$python" -m diffinv.cli bench full-size --models sd2.1 --dtype float16 --device cuda \
  --parts call,decoder,smoke,inversion --frames 1,4 --iterations 20 --steps 10 --repeats 3 --full-steps 50 \
  --json "$out/full_size_fp16.json" | tee "$out/full_size_fp16.txt"
echo "== done in $((SECONDS - start)) s; outputs in $out"
