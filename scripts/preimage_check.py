"""Is the sampler injective? Invert z_0 (naive and exact) and regenerate it from the recovered noise.

A noise far from the true one (high noise NMSE) that still regenerates z_0 (tiny regenerated NMSE) is a
second preimage: no inversion can tell the two apart. Usage: python scripts/preimage_check.py [MODEL]
"""

import sys

import torch

import diffinv
from diffinv.utils.metrics import nmse

torch.set_num_threads(1)
pipe = diffinv.load(sys.argv[1] if len(sys.argv) > 1 else "tiny")
prompt = "a red circle on a blue background"
for sampler, steps, guidance in [("dpm++2m", 10, 7.5), ("dpm++2m", 10, 1.0)]:
    generated = diffinv.generate(pipe, prompt, seed=0, sampler=sampler, steps=steps, guidance=guidance)
    denoiser = diffinv.Denoiser.from_pipeline(pipe, prompt, 1, guidance, pipe.scheduler.config.prediction_type)
    schedule = diffinv.make_schedule(sampler, pipe.scheduler.config, steps)
    for method, options in [("naive", {}), ("exact", {"anderson": 3, "sweeps": 2})]:
        inverted = diffinv.invert_sampler(denoiser, schedule, generated.latent, method=method, **options)
        regenerated = diffinv.sample(denoiser, schedule, inverted.noise).final
        print(f"{sampler}-{steps} guidance {guidance:g} {method:5s}: noise NMSE {nmse(inverted.noise, generated.noise):.3g}, "
              f"norm ratio {float(inverted.noise.norm() / generated.noise.norm()):.3f}, "
              f"regenerated z_0 NMSE {nmse(regenerated, generated.latent):.3g}", flush=True)
