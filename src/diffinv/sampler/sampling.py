"""Sampling: z_T -> z_0 by the schedule's steps, reproducing the diffusers pipelines.

`sample` is a loop over the steps' steppers (`diffinv.sampler.update.SINGLE_CALL`, i.e. `update`, unless
the sampler has its own); with the matching diffusers scheduler it gives
`pipe(..., latents=noise, output_type="latent")` to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from diffinv.models.denoiser import Denoiser
from diffinv.models.prediction import NoiseLevel
from diffinv.sampler.schedule import Schedule, Step
from diffinv.sampler.update import SINGLE_CALL, Record


@dataclass
class Trajectory:
    """Latents visited (z_T first, z_0 last) and the data prediction x0 made at each step."""

    latents: list[torch.Tensor] = field(default_factory=list)
    data_predictions: list[torch.Tensor] = field(default_factory=list)

    @property
    def final(self) -> torch.Tensor:
        return self.latents[-1]


def step_history(step: Step, data_predictions: list[torch.Tensor]) -> list[tuple[NoiseLevel, torch.Tensor]]:
    """(level, x0) pairs of the earlier steps that `step` reuses, from the x0's made so far (oldest first)."""
    return [(point, data_predictions[-back]) for back, point in enumerate(step.history, start=1)]


def run_step(denoiser, x: torch.Tensor, step: Step, memory: list[Record]) -> tuple[torch.Tensor, Record]:
    """One sampling step through its sampler's stepper."""
    return (step.stepper or SINGLE_CALL).step(denoiser, x, step, memory)


@torch.inference_mode()
def sample(
    denoiser: Denoiser,
    schedule: Schedule,
    noise: torch.Tensor,
    keep_trajectory: bool = False,
    progress: bool = False,
    after_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
) -> Trajectory:
    """Run the sampler from `noise`; the returned trajectory always ends with z_0 (and holds every x0).

    `after_step(index, x)`, when given, sees each step's result and returns the latent the sampler goes
    on from (DiffEdit's blending of two branches uses it); the step math itself is the sampler's stepper.
    """
    x = noise.float() * schedule.init_noise_sigma
    trajectory = Trajectory(latents=[x])
    memory: list[Record] = []  # most recent first
    for index, step in enumerate(tqdm(schedule.steps, desc=f"sampling ({schedule.name})", disable=not progress, leave=False)):
        x, record = run_step(denoiser, x, step, memory)
        if after_step is not None:
            x = after_step(index, x)
        memory.insert(0, record)
        del memory[4:]
        trajectory.data_predictions.append(record.data)
        if keep_trajectory:
            trajectory.latents.append(x)
    if not keep_trajectory:
        trajectory.latents.append(x)
    if not torch.isfinite(x).all():
        raise FloatingPointError("sampling produced NaN or infinite latents")
    return trajectory
