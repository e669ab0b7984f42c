"""Inversion of the sampler, z_0 -> z_T: the methods as typed configurations (`methods.py`), one loop
(`driver.py`), one result type."""

from __future__ import annotations

import math
from typing import Any

import torch

from diffinv.inversion.driver import InversionDiverged, InverseStep, run_inversion
from diffinv.inversion.methods import METHODS, EasyInv, Exact, FixedPoint, Method, Naive, ReNoise
from diffinv.inversion.result import InversionResult
from diffinv.models.denoiser import Denoiser
from diffinv.sampler.schedule import Schedule
from diffinv.utils.status import OnDivergence, Status


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
    on_divergence: OnDivergence = "raise",
    **options: Any,
) -> InversionResult:
    """Recover z_T from z_0 = `latent` for the sampler `schedule`.

    `method` is a configuration (`Exact(tol=1e-8)`) or a name ('exact', a preset such as 'exact-paper', or
    'exact:tol=1e-8'); `options` override its fields. The result carries the whole configuration
    (`method_config`), so the run can be repeated from its report; a schedule chosen by default says where it
    came from in the result's notes. `on_divergence`: raise `InversionDiverged`, or report (see `run_inversion`)."""
    config = METHODS.resolve(method, options)
    result = run_inversion(denoiser, schedule, latent, config.build(), config.name, keep_trajectory=keep_trajectory,
                           progress=progress, on_divergence=on_divergence)
    if getattr(config, "keep_better", False) and not result.converged and result.status is not Status.DIVERGED:
        keep_better_than_naive(denoiser, schedule, latent, result, config.gaussian_test)
    result.method_config = config.as_dict()
    if schedule.note:
        result.notes.insert(0, schedule.note)
    return result


def keep_better_than_naive(
    denoiser: Denoiser, schedule: Schedule, latent: torch.Tensor, result: InversionResult, gaussian_test: float | None = 1e-6
) -> None:
    """Never return a noise worse than the warm start: where an iterative method did not converge, each latent
    keeps whichever of its noise and naive inversion's regenerates z_0 closer through the sampler, among those a
    Gaussian sampler could have drawn. Where a step folds, a per-step solver can land on a second preimage that
    regenerates z_0 closer than the true noise does; such a noise often has a norm no Gaussian draw has, so a
    noise whose squared norm lies further from its mean than a draw would with probability `gaussian_test` is
    passed over when the other one is not (None: regeneration alone). Costs a naive pass and two sampling
    passes, counted in `nfe`; `result.returned` says which noise each latent got."""
    from diffinv.inversion.sweeps import regeneration_errors

    before = denoiser.nfe
    with torch.inference_mode():
        naive = run_inversion(denoiser, schedule, latent, Naive().build(), "naive").noise
        mine = regeneration_errors(denoiser, schedule, latent.float(), result.noise)
        theirs = regeneration_errors(denoiser, schedule, latent.float(), naive)
    worse = theirs < mine
    if gaussian_test is not None:
        mine_drawn, theirs_drawn = gaussian_norm(result.noise, gaussian_test), gaussian_norm(naive, gaussian_test)
        worse = (theirs_drawn & ~mine_drawn) | ((theirs_drawn == mine_drawn) & worse)
    worse = worse.to(result.noise.device)
    result.nfe += denoiser.nfe - before
    result.returned = ["naive" if bool(w) else result.method for w in worse]
    if worse.any():
        shape = (-1,) + (1,) * (result.noise.ndim - 1)
        result.noise = torch.where(worse.view(shape), naive.to(result.noise.dtype), result.noise)
        result.notes.append(f"{int(worse.sum())} of {len(worse)} latents kept naive inversion's noise, which "
                            f"regenerates z_0 closer than the unconverged {result.method} inversion's or is the "
                            "one of the two a Gaussian sampler could have drawn")


def gaussian_norm(noise: torch.Tensor, probability: float) -> torch.Tensor:
    """Per latent, whether its squared norm is one a standard Gaussian draw of its size reaches with probability at
    least `probability` (two-sided; ||z||^2 / n is about normal with mean 1 and variance 2 / n)."""
    flat = noise.detach().double().flatten(1)
    size = flat.shape[1]
    deviation = (flat.pow(2).mean(1) - 1.0).abs() / math.sqrt(2.0 / size)
    limit = math.sqrt(2.0) * float(torch.special.erfinv(torch.tensor(1.0 - probability, dtype=torch.float64)))
    return (deviation <= limit).cpu()


__all__ = ["METHODS", "EasyInv", "Exact", "FixedPoint", "InversionDiverged", "InversionResult", "Method", "Naive",
           "ReNoise", "InverseStep", "check_method_name", "gaussian_norm", "invert_sampler", "keep_better_than_naive"]
