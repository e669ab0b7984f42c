#!/usr/bin/env bash
# The main job on the bundled model: generate an image from known noise, recover its latent (decoder
# inversion by gradient descent) and its noise (exact inversion of DDIM), regenerate from the recovered
# noise, and print the report; then the recovered noise against the true one, next to naive inversion's,
# from the image and from the generated latent z_0 itself. Outputs go to runs/demo/: generated/, inverted/
# (from the image), naive/, from_latent/ and naive_from_latent/; each noise.png shows the true and the
# recovered noise side by side. Extra arguments go to the first, reported `diffinv invert` (e.g.
# --decoder encoder, the usual shortcut, to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
diffinv="${DIFFINV_VENV:-.venv}/bin/diffinv"
python="${DIFFINV_VENV:-.venv}/bin/python"
prompt="a red square on a blue background"
settings=(--model tiny --prompt "$prompt" --scheduler ddim --steps 50 --guidance 3)
"$diffinv" generate "${settings[@]}" --seed 3 --out runs/demo/generated > /dev/null
"$diffinv" invert runs/demo/generated/image.png "${settings[@]}" --method exact --method-option anderson=3 \
  --decoder gradient --reference runs/demo/generated --out runs/demo/inverted "$@"
"$diffinv" invert runs/demo/generated/image.png "${settings[@]}" --method naive --decoder gradient \
  --reference runs/demo/generated --out runs/demo/naive > /dev/null
latent=(--latent runs/demo/generated/latent.safetensors --reference runs/demo/generated)
"$diffinv" invert "${latent[@]}" "${settings[@]}" --method exact --method-option anderson=3 --method-option tol=1e-5 \
  --out runs/demo/from_latent > /dev/null
"$diffinv" invert "${latent[@]}" "${settings[@]}" --method naive --out runs/demo/naive_from_latent > /dev/null
"$python" - <<'PY'
import json
exact, naive, exact_z0, naive_z0 = (json.load(open(f"runs/demo/{name}/report.json"))
                                    for name in ("inverted", "naive", "from_latent", "naive_from_latent"))
print(f"recovered noise, from z_0: NMSE {exact_z0['noise_nmse']:.1e} from the true noise with exact inversion, "
      f"{naive_z0['noise_nmse']:.1e} with naive ({naive_z0['noise_nmse'] / exact_z0['noise_nmse']:.0f}x farther); "
      f"see runs/demo/from_latent/noise.png")
print(f"recovered noise, from the image: NMSE {exact['noise_nmse']:.2f} exact, {naive['noise_nmse']:.2f} naive "
      f"(the decoder inversion's latent error, NMSE {exact['latent_nmse']:.1e}, is what the inverse sampler amplifies); "
      f"regenerated image {exact['psnr']:.1f} dB exact, {naive['psnr']:.1f} dB naive")
PY
echo "wrote runs/demo/{generated,inverted,naive,from_latent,naive_from_latent}/ (reconstruction.png is regenerated from the recovered noise)" >&2
