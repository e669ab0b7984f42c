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
    result.method_config = config.as_dict()
    if schedule.note:
        result.notes.insert(0, schedule.note)
    return result


__all__ = ["METHODS", "EasyInv", "Exact", "FixedPoint", "InversionDiverged", "InversionResult", "Method", "Naive",
           "ReNoise", "StepSolver", "check_method_name", "invert_sampler"]
