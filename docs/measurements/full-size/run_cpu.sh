#!/usr/bin/env bash
# The full-size CPU measurements of README's "Full size" section, one `diffinv bench full-size` command per
# file, one thread, most wanted first. Resumable: a command whose .json and .txt are already here is skipped,
# so rerunning this script after an interruption runs only what is missing.
# Usage: docs/measurements/full-size/run_cpu.sh [python]
set -u
here="$(cd "$(dirname "$0")" && pwd)"
python="${1:-python}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
run() {  # run NAME ARGS...: writes NAME.json and NAME.txt (the command, then its table)
  local name="$1"; shift
  if [ -s "$here/$name.json" ] && [ -s "$here/$name.txt" ]; then echo "skip $name (done)"; return; fi
  echo "== $name: diffinv bench full-size $* ($(date -u +%H:%M:%S))"
  {
    echo "\$ OMP_NUM_THREADS=1 diffinv bench full-size $* --json docs/measurements/full-size/$name.json"
    "$python" -m diffinv.cli bench full-size "$@" --json "$here/$name.json.part" 2>"$here/$name.log"
  } > "$here/$name.txt.part"
  if [ $? -eq 0 ]; then mv "$here/$name.json.part" "$here/$name.json"; mv "$here/$name.txt.part" "$here/$name.txt"; rm -f "$here/$name.log"
  else echo "   $name failed, see $name.log"; fi
}
run sd21_call_inversion --models sd2.1 --dtype float32 --parts call,inversion --steps 2 --repeats 2 --memory-limit 12
run sd21_smoke --models sd2.1 --dtype float32 --parts smoke --memory-limit 12
run sdxl_smoke_call --models sdxl --dtype float32,bfloat16 --parts smoke,call --memory-limit 12
run flux --models flux --dtype float32,bfloat16 --memory-limit 12
run sd21_decoder_f32 --models sd2.1 --dtype float32 --parts decoder --frames 1 --iterations 1 --decoder-methods gradient,gradient-free --memory-limit 12
run sd21_decoder_bf16 --models sd2.1 --dtype bfloat16 --parts decoder --frames 1 --iterations 1 --decoder-methods gradient,gradient-free --memory-limit 12
run sd21_inversion_cpu --models sd2.1 --dtype float32 --parts inversion --steps 1 --repeats 3 --memory-limit 12
# stopped for time after its first four runs (1 frame each way, then 4 frames at once); those rows are in
# sd21_decoder_f32_4frames_stopped.json, and the chunked gradient-free run is the next command
run sd21_decoder_f32_4frames --models sd2.1 --dtype float32 --parts decoder --frames 1,4 --iterations 1 --decoder-methods gradient,gradient-free --chunks all,1 --memory-limit 12
run sd21_decoder_f32_4frames_chunked --models sd2.1 --dtype float32 --parts decoder --frames 4 --iterations 1 --decoder-methods gradient-free --chunks 1 --memory-limit 12
run sd21_inversion_outside --models sd2.1 --dtype float32 --parts inversion --steps 2 --repeats 2 --memory-limit 12
run sd3_smoke_call_bf16 --models sd3 --dtype bfloat16 --parts smoke,call --memory-limit 12
# not run yet on this CPU (time): the bfloat16 call and inversion, every decoder method, SD3's float32 smoke pass
run sd21_call_inversion_bf16 --models sd2.1 --dtype bfloat16 --parts call,inversion --steps 2 --repeats 2 --memory-limit 12
run sd21_decoder_all --models sd2.1 --dtype float32,bfloat16 --parts decoder --frames 1,4 --iterations 1 --memory-limit 12
run sd3_smoke_f32 --models sd3 --dtype float32 --parts smoke --memory-limit 12
