"""`diffinv probe`'s matrix-free step probe on the full-size SD 2.1-base UNet with random weights (nothing
downloaded): the first step of DPM-Solver++(2M)-10 at guidance 7.5 from seeded noise, at SIDE px (default
512), with at most ITERATIONS bidiagonalisation iterations. Prints one line per iteration and writes
`{"rows": [...]}` with the cost (seconds, peak memory, network calls, and those in guided-call equivalents).

    OMP_NUM_THREADS=1 python scripts/probe_full_size.py --side 512 --iterations 12 --json runs/probe_full_size.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument("--sampler", default="dpm++2m")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from diffinv.bench.architectures import build_pipeline
    from diffinv.inversion.probe import probe_steps, sample_trajectory
    from diffinv.models.denoiser import Denoiser
    from diffinv.pipeline import pipeline_schedule, seeded_noise
    from diffinv.utils.measure import measure, track_memory

    track_memory()
    threads = torch.get_num_threads()
    pipe = build_pipeline("sd2.1", torch.float32, "cpu")
    latent_side = args.side // pipe.vae_scale_factor
    schedule = pipeline_schedule(pipe, args.sampler, args.steps, (latent_side, latent_side))
    prompt = "a photo of a cat on a red background"
    denoiser = Denoiser.from_pipeline(pipe, prompt, 1, args.guidance, schedule.prediction_type,
                                      image_size=(args.side, args.side))
    noise = seeded_noise(pipe, 0, height=args.side, width=args.side)
    with torch.inference_mode():
        denoiser.output(noise, 500)  # warm-up
        with measure(noise.device) as call:
            denoiser.output(noise, 500)
    print(f"{threads} thread(s), {args.side} px, latent {list(noise.shape)}: one guided call {call.seconds:.1f} s, "
          f"peak {call.peak_memory_bytes / 2**20:.0f} MiB", flush=True)
    started = time.perf_counter()
    trajectory = sample_trajectory(denoiser, schedule, noise, until=1)
    denoiser.nfe = 0

    def report(step: int, k: int, estimate) -> None:
        print(f"iteration {k}: smallest singular value <= {estimate.values[0]:.5f}, largest >= {estimate.largest[0]:.4f}, "
              f"residual {estimate.residuals[0]:.2e}, {time.perf_counter() - started:.0f} s", flush=True)

    rows = probe_steps(denoiser, trajectory, [0], full=False, iterations=args.iterations, tol=args.tol,
                       labels=[{"prompt": prompt, "seed": 0}], on_iteration=report)
    for row in rows:
        row.update(model="sd2.1 (random weights)", side=args.side, threads=threads, guidance=args.guidance,
                   sampler=schedule.name, call_seconds=call.seconds, call_peak_memory_bytes=call.peak_memory_bytes,
                   call_equivalents=row["seconds"] / call.seconds, tol=args.tol, max_iterations=args.iterations)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
