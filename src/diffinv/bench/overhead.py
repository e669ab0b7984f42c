"""What diffinv adds around the network: its naive DDIM inversion against a plain diffusers loop.

Both invert the same z_0 of the same model with the same prompt embeddings and guidance: diffinv through
`invert_sampler(method="naive")` (its step function, NFE counting, checks and measurement), diffusers through
`DDIMInverseScheduler.step` in a bare loop over its timesteps calling the UNet. They alternate `repeats`
times in one process so machine noise hits both alike; the row reports each one's median wall time, the
ratio, and how far apart their recovered noises are.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from diffusers import DDIMInverseScheduler

from diffinv.bench.tables import Column, format_table
from diffinv.inversion import invert_sampler
from diffinv.models.denoiser import Denoiser
from diffinv.pipeline import generate
from diffinv.sampler.schedule import make_schedule
from diffinv.utils.metrics import nmse

COLUMNS: list[Column] = [
    ("steps", "steps", ""),
    ("guidance", "w", "g"),
    ("batch", "batch", ""),
    ("diffinv_seconds", "diffinv s", ".4f"),
    ("diffusers_seconds", "diffusers s", ".4f"),
    ("ratio", "ratio", ".3f"),
    ("noise_nmse_between", "NMSE between", ".2e"),
]


@torch.inference_mode()
def diffusers_inversion(pipe, latent: torch.Tensor, embeds: torch.Tensor, steps: int, guidance: float) -> torch.Tensor:
    """z_0 -> z_T with diffusers' DDIMInverseScheduler, the loop written as its documentation does."""
    inverse_scheduler = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    inverse_scheduler.set_timesteps(steps)
    x = latent
    for t in inverse_scheduler.timesteps:
        model_input = torch.cat([x, x]) if guidance > 1 else x
        output = pipe.unet(model_input, t, encoder_hidden_states=embeds).sample
        if guidance > 1:
            unconditional, conditional = output.chunk(2)
            output = unconditional + guidance * (conditional - unconditional)
        x = inverse_scheduler.step(output, t, x).prev_sample
    return x


def run_overhead_benchmark(pipe, steps: int = 50, guidance: float = 1.0, batch: int = 1, repeats: int = 7,
                           prompt: str = "a red circle on a blue background") -> list[dict[str, Any]]:
    """One row: median seconds of diffinv's naive inversion and of the diffusers loop, alternated."""
    made = generate(pipe, [prompt] * batch, seed=0, steps=steps, guidance=guidance, batch_size=batch)
    denoiser = Denoiser.from_pipeline(pipe, [prompt] * batch, batch, guidance, pipe.scheduler.config.prediction_type)
    schedule = make_schedule("ddim", pipe.scheduler.config, steps)
    ours, theirs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        result = invert_sampler(denoiser, schedule, made.latent, method="naive")
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        reference = diffusers_inversion(pipe, made.latent, denoiser.embeds, steps, guidance)
        theirs.append(time.perf_counter() - start)
    mine, other = statistics.median(ours), statistics.median(theirs)
    return [{"steps": steps, "guidance": guidance, "batch": batch, "repeats": repeats, "diffinv_seconds": mine,
             "diffusers_seconds": other, "ratio": mine / other, "noise_nmse_between": nmse(result.noise, reference),
             "reported_seconds": result.seconds}]


def format_rows(rows: list[dict[str, Any]]) -> str:
    return format_table(rows, COLUMNS, title="Naive DDIM inversion: diffinv against a plain diffusers DDIMInverseScheduler loop")
