"""Inversion of the sampler, z_0 -> z_T: the methods as typed configurations (`methods.py`), one loop
(`driver.py`), one result type."""

from __future__ import annotations

from typing import Any

import torch

from diffinv.inversion.driver import InversionDiverged, StepSolver, run_inversion
from diffinv.inversion.methods import METHODS, EasyInv, Exact, FixedPoint, Method, Naive, ReNoise
from diffinv.inversion.result import InversionResult
from diffinv.models.denoiser import Denoiser
from diffinv.sampler.schedule import Schedule


def check_method_name(name: str) -> str:
    """Return `name` if it names a sampler-inversion method or preset, else raise a ValueError listing them."""
    return METHODS.check_name(name)


def invert_sampler(
    denoiser: Denoiser,
    schedule: Schedule,
    latent: torch.Tensor,
    method: str | Method = "naive",
    *,
    keep_trajectory: bool = False,
    progress: bool = False,
    **options: Any,
) -> InversionResult:
    """Recover z_T from z_0 = `latent` for the sampler `schedule`.

    `method` is a configuration (`Exact(tol=1e-8)`) or a name ('exact', a preset such as 'exact-paper', or
    'exact:tol=1e-8'); `options` override its fields. The result carries the whole configuration
    (`method_config`), so the run can be repeated from its report; a schedule chosen by default says where it
    came from in the result's notes."""
    config = METHODS.resolve(method, options)
    result = run_inversion(denoiser, schedule, latent, config.build(), config.name, keep_trajectory=keep_trajectory,
                           progress=progress)
    if getattr(config, "keep_better", False) and not result.converged:
        keep_better_than_naive(denoiser, schedule, latent, result)
    result.method_config = config.as_dict()
    if schedule.note:
        result.notes.insert(0, schedule.note)
    return result


def keep_better_than_naive(denoiser: Denoiser, schedule: Schedule, latent: torch.Tensor, result: InversionResult) -> None:
    """Never return a noise worse than the warm start: where an iterative method did not converge, each latent
    keeps whichever of its noise and naive inversion's regenerates z_0 closer through the sampler (the only
    judge there is without the true noise). Costs a naive pass and two sampling passes, counted in `nfe`;
    the result says which latents took naive's noise."""
    from diffinv.inversion.sweeps import regeneration_errors

    before = denoiser.nfe
    with torch.inference_mode():
        naive = run_inversion(denoiser, schedule, latent, Naive().build(), "naive").noise
        mine = regeneration_errors(denoiser, schedule, latent.float(), result.noise)
        theirs = regeneration_errors(denoiser, schedule, latent.float(), naive)
    worse = (theirs < mine).to(result.noise.device)
    result.nfe += denoiser.nfe - before
    result.returned = ["naive" if bool(w) else result.method for w in worse]
    if worse.any():
        shape = (-1,) + (1,) * (result.noise.ndim - 1)
        result.noise = torch.where(worse.view(shape), naive.to(result.noise.dtype), result.noise)
        result.notes.append(f"{int(worse.sum())} of {len(worse)} latents kept naive inversion's noise, which "
                            f"regenerates z_0 closer than the unconverged {result.method} inversion's")


__all__ = ["METHODS", "EasyInv", "Exact", "FixedPoint", "InversionDiverged", "InversionResult", "Method", "Naive",
           "ReNoise", "StepSolver", "check_method_name", "invert_sampler", "keep_better_than_naive"]
