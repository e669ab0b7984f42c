"""Inversion of the sampler, z_0 -> z_T: one module per method family, one registry, one result type."""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffinv.inversion.driver import InversionDiverged, StepSolver, run_inversion
from diffinv.inversion.easyinv import EasyInv
from diffinv.inversion.exact import make_exact, make_fixed_point
from diffinv.inversion.naive import naive_step
from diffinv.inversion.options import checked_factory
from diffinv.inversion.renoise import ReNoise
from diffinv.inversion.result import InversionResult
from diffinv.models.denoiser import Denoiser
from diffinv.sampler.schedule import Schedule

#: Method name -> factory that takes the method's options and returns its per-step solver.
METHODS: dict[str, Callable[..., StepSolver]] = {
    "naive": checked_factory("naive", lambda: naive_step),
    "easyinv": checked_factory("easyinv", EasyInv),
    "renoise": checked_factory("renoise", ReNoise),
    "exact": make_exact,
    "fixed-point": make_fixed_point,
}


def check_method_name(name: str) -> str:
    """Return `name` if it is a known sampler-inversion method, else raise a ValueError listing them."""
    if name not in METHODS:
        raise ValueError(f"unknown inversion method {name!r}; choose one of {', '.join(METHODS)}")
    return name


def invert_latent(
    denoiser: Denoiser,
    schedule: Schedule,
    latent: torch.Tensor,
    method: str = "naive",
    keep_trajectory: bool = False,
    progress: bool = False,
    **options,
) -> InversionResult:
    """Recover z_T from z_0 = `latent` for the sampler `schedule` with the named method and its options; a
    schedule chosen by default says where it came from in the result's notes."""
    solver = METHODS[check_method_name(method)](**options)
    result = run_inversion(denoiser, schedule, latent, solver, method, keep_trajectory=keep_trajectory, progress=progress)
    if schedule.note:
        result.notes.insert(0, schedule.note)
    return result


__all__ = ["METHODS", "InversionDiverged", "InversionResult", "check_method_name", "invert_latent"]
