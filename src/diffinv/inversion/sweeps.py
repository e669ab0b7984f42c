"""Sweeps of exact inversion over a multistep sampler: each sweep's noise judged by how well it regenerates z_0,
the best sweep per latent kept (`combine_sweeps`), and the records a sampler with its own stepper reads,
replayed over estimated latents (`replay`)."""

from __future__ import annotations

import torch

from diffinv.inversion.driver import StepOutcome
from diffinv.inversion.iteration import per_latent_norm
from diffinv.models.denoiser import Denoiser
from diffinv.sampler.sampling import run_step, sample
from diffinv.sampler.schedule import Schedule
from diffinv.sampler.update import Record


def regeneration_errors(denoiser: Denoiser, schedule: Schedule, latent: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per latent, ||S(noise) - z_0|| / ||z_0||: how well `noise` regenerates z_0 = `latent` through the sampler S
    (one sampling pass)."""
    return per_latent_norm(sample(denoiser, schedule, noise).final - latent) / per_latent_norm(latent).clamp_min(1e-12)


def combine_sweeps(sweeps: list[list[StepOutcome]], choice: torch.Tensor) -> list[StepOutcome]:
    """Per inverse step, each latent's outcome from its chosen sweep (`choice[b]` indexes `sweeps`).

    Residuals are kept per batch, so a combined step reports the largest residual of the sweeps it took
    latents from (an upper bound) and is converged only if each of them was."""
    combined = []
    for position in range(len(sweeps[0])):
        used = sorted({int(c) for c in choice})
        rows = [choice == index for index in range(len(sweeps))]
        latent, data = sweeps[used[0]][position].latent.clone(), sweeps[used[0]][position].data_prediction.clone()
        for index in used[1:]:
            mask = rows[index].to(latent.device).view(-1, *[1] * (latent.ndim - 1))
            latent = torch.where(mask, sweeps[index][position].latent, latent)
            data = torch.where(mask, sweeps[index][position].data_prediction, data)
        residuals = [sweeps[index][position].residual for index in used]
        combined.append(StepOutcome(
            latent=latent, data_prediction=data,
            residual=None if any(r is None for r in residuals) else max(residuals),
            converged=all(sweeps[index][position].converged for index in used),
        ))
    return combined


def replay(denoiser: Denoiser, schedule: Schedule, latents: list[torch.Tensor]) -> dict[int, Record]:
    """Each step's record with the sampler run from the estimated latents (x_T first): step k starts from
    latents[k] and reads the records replayed before it. Only the steps a later step reads are run."""
    records: dict[int, Record] = {}
    memory: list[Record] = []
    read = max((len(step.history) for step in schedule.steps), default=0)
    for step in schedule.steps[:-1]:
        _, record = run_step(denoiser, latents[step.index], step, memory)
        records[step.index] = record
        memory.insert(0, record)
        del memory[read:]
    return records
