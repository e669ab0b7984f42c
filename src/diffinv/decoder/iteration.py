"""The one iteration loop every iterative decoder inversion runs, and the update rules it steps with.

A `Stepper` holds the iterate: `point()` is where the direction is evaluated (with inertia for
inertial KM), `step()` moves on (forward step, or Adam's moments). `fit_latent` evaluates the direction,
records residuals, tracks cocoercivity ratios and stops on divergence or tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from diffinv.decoder.cocoercivity import cocoercivity_ratios, ratio_floor

#: direction(y) -> (direction in float32, ||D(y) - x||^2, ||T(y)||^2 or None)
Direction = Callable[[torch.Tensor], tuple[torch.Tensor, float, float | None]]


def squared_norm(tensor: torch.Tensor) -> float:
    """||tensor||^2 in float64."""
    return float(tensor.detach().double().pow(2).sum())


class Stepper:
    """Holds the iterate; `point()` is where the direction is evaluated, `step()` moves on."""

    def __init__(self, start: torch.Tensor):
        self.z = start

    def point(self) -> torch.Tensor:
        return self.z

    def step(self, k: int, y: torch.Tensor, direction: torch.Tensor) -> None:
        raise NotImplementedError


class ForwardStepUpdate(Stepper):
    def __init__(self, start: torch.Tensor, step_size: float):
        super().__init__(start)
        self.step_size = step_size

    def step(self, k: int, y: torch.Tensor, direction: torch.Tensor) -> None:
        self.z = y - self.step_size * direction


class InertialKMUpdate(ForwardStepUpdate):
    def __init__(self, start: torch.Tensor, step_size: float, alpha: float):
        super().__init__(start, step_size)
        self.alpha = alpha
        self.previous = start  # so the first point has no inertia (alpha_1 = 0)

    def point(self) -> torch.Tensor:
        return self.z + self.alpha * (self.z - self.previous)

    def step(self, k: int, y: torch.Tensor, direction: torch.Tensor) -> None:
        self.previous = self.z
        super().step(k, y, direction)


class AdamUpdate(Stepper):
    def __init__(self, start: torch.Tensor, lr_at: Callable[[int], float], beta1: float, beta2: float, eps: float):
        super().__init__(start)
        self.lr_at, self.beta1, self.beta2, self.eps = lr_at, beta1, beta2, eps
        self.m = torch.zeros_like(start)
        self.v = torch.zeros_like(start)

    def step(self, k: int, y: torch.Tensor, direction: torch.Tensor) -> None:
        self.m.mul_(self.beta1).add_(direction, alpha=1 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(direction, direction, value=1 - self.beta2)
        m_hat = self.m / (1 - self.beta1 ** (k + 1))
        v_hat = self.v / (1 - self.beta2 ** (k + 1))
        self.z = y - self.lr_at(k) * m_hat / (v_hat.sqrt() + self.eps)


@dataclass
class Trace:
    latent: torch.Tensor
    image_sq: list[float]
    latent_sq: list[float | None]
    iterations: int
    reason: str | None = None
    ratio_min: torch.Tensor | None = None  # per frame


def fit_latent(
    stepper: Stepper,
    direction: Direction,
    iterations: int,
    *,
    track_cocoercivity: torch.Tensor | None,
    divergence_factor: float,
    tol: float | None,
    image_numel: int,
    bar: tqdm,
) -> Trace:
    start = stepper.z
    # scaled latents have unit variance by design, so RMS 1 is the smallest meaningful scale
    start_norm = max(float(start.double().norm()), math.sqrt(start.numel()))
    image_sq: list[float] = []
    latent_sq: list[float | None] = []
    ratio_min: torch.Tensor | None = None
    previous: tuple[torch.Tensor, torch.Tensor] | None = None
    floor: torch.Tensor | None = None
    for k in range(iterations):
        y = stepper.point()
        d, isq, lsq = direction(y)
        image_sq.append(isq)
        latent_sq.append(lsq)
        reason = divergence(k, y, d, image_sq, start, start_norm, divergence_factor)
        if reason is not None:
            return Trace(y, image_sq, latent_sq, k, reason, ratio_min)
        if track_cocoercivity is not None:  # E(x), for the rounding floor of the ratios
            if floor is None:
                floor = ratio_floor(d, track_cocoercivity)
            if previous is not None:
                ratio = cocoercivity_ratios(d - previous[1], y - previous[0], floor)
                ratio = torch.where(torch.isnan(ratio), torch.full_like(ratio, math.inf), ratio)
                ratio_min = ratio if ratio_min is None else torch.minimum(ratio_min, ratio)
            previous = (y, d)
        if tol is not None:
            rms = math.sqrt((lsq if lsq is not None else isq) / (y.numel() if lsq is not None else image_numel))
            if rms <= tol:
                return Trace(y, image_sq, latent_sq, k, None, ratio_min)
        stepper.step(k, y, d)
        bar.update(1)
    return Trace(stepper.z, image_sq, latent_sq, iterations, None, ratio_min)


def divergence(
    k: int, y: torch.Tensor, d: torch.Tensor, image_sq: list[float], start: torch.Tensor, start_norm: float, factor: float
) -> str | None:
    if not (math.isfinite(image_sq[-1]) and bool(torch.isfinite(d).all()) and bool(torch.isfinite(y).all())):
        return f"non-finite values at iteration {k}"
    first = math.sqrt(max(image_sq[0], 1e-30))
    now = math.sqrt(image_sq[-1])
    if now > factor * first:
        return f"||D(z) - x|| grew from {first:.4g} to {now:.4g} (more than {factor:g}x) at iteration {k}"
    drift = float((y - start).double().norm())
    if drift > factor * start_norm:
        return (
            f"the latent moved {drift:.4g} from its start, more than {factor:g}x max(||E(x)||, sqrt(numel)) = "
            f"{start_norm:.4g}, at iteration {k}"
        )
    return None
