"""Iterative solvers for one implicit equation, and the loop they share.

Every iterative inversion method here runs the same loop (`iterate`): from z_0, evaluate a direction
d(z_k) and a per-latent residual, stop when the residual is below a tolerance, else move to

    z_{k+1} = z_k - rho_k d(z_k)                       (plain)
    z_{k+1} = Anderson(z_k, z_k - rho_k d(z_k))         (accelerated, window m)

What d is decides the method:

- forward step method (Hong et al.):  d = Phi(z) - x, for the equation Phi(z) = x;
- gradient descent:                   d = J_Phi(z)^T (Phi(z) - x), the gradient of ||Phi(z) - x||^2 / 2;
- fixed-point iteration z <- f(z):    d = z - f(z) with rho = 1 (Pan et al.; ReNoise builds on it).

The step size rho_k follows the schedule of Hong et al.'s code: a linear warm-up over the first
iterations, then halving whenever the residual has not improved for `patience` iterations
(`StepSize`). The loop always returns an iterate whose residual it measured (the best one unless the
tolerance was met), so the reported residual is the true residual of what is returned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from diffinv.inversion.anderson import Anderson


@dataclass
class Evaluation:
    """One evaluation at an iterate: the direction to step against, per-latent residuals, and extras.

    `residual` is a [B] tensor (one relative residual per latent of the batch); `extra` is kept for the
    iterate the loop returns (e.g. the network's data prediction there).
    """

    direction: torch.Tensor
    residual: torch.Tensor
    extra: Any = None


@dataclass
class StepSize:
    """rho_k: linear warm-up over `warmup` iterations, then multiplied by `factor` each time the residual
    has not improved by a relative `threshold` for more than `patience` iterations (0 = never).

    The defaults are those of Hong et al.'s code for DDIM (rho 0.5, warm-up 20, factor 0.5, patience 20,
    threshold 1e-4, i.e. torch's ReduceLROnPlateau); `StepSize.constant(rho)` is a fixed step.
    """

    rho: float = 0.5
    warmup: int = 20
    factor: float = 0.5
    patience: int = 20
    threshold: float = 1e-4

    @classmethod
    def constant(cls, rho: float = 1.0) -> "StepSize":
        return cls(rho=rho, warmup=0, patience=0)


class _StepSizeState:
    """The running value of a `StepSize` schedule (warm-up, then halving on plateau)."""

    def __init__(self, schedule: StepSize) -> None:
        self.schedule = schedule
        self.current = schedule.rho
        self.best = float("inf")
        self.bad = 0

    def value(self, iteration: int) -> float:
        warmup = self.schedule.warmup
        return self.current * min(1.0, (iteration + 1) / warmup) if warmup > 0 else self.current

    def observe(self, residual: float) -> bool:
        """Record a residual; True when the step size was just reduced."""
        if residual < self.best * (1.0 - self.schedule.threshold):
            self.best, self.bad = residual, 0
            return False
        self.bad += 1
        if self.schedule.patience > 0 and self.bad > self.schedule.patience:
            self.current *= self.schedule.factor
            self.bad = 0
            return True
        return False


@dataclass
class Iteration:
    """What `iterate` did: the returned iterate, its residual, and the history of residuals.

    `residuals[k]` is the largest per-latent residual at the k-th evaluated iterate; `stop` is why the
    loop ended: "tolerance", "plateau" (no progress for `stall` evaluations), "diverged", or "max_iter".
    """

    latent: torch.Tensor
    residual: float
    converged: bool
    stop: str
    evaluations: int
    residuals: list[float] = field(default_factory=list)
    iterates: list[torch.Tensor] = field(default_factory=list)
    extra: Any = None


def iterate(
    evaluate: Callable[[torch.Tensor], Evaluation],
    start: torch.Tensor,
    max_iter: int = 500,
    tol: float | None = None,
    step_size: StepSize | None = None,
    anderson: int = 0,
    average: bool = False,
    stall: int | None = None,
    stall_rtol: float = 0.01,
    divergence: float = 1e4,
    restart: float = 2.0,
    keep_iterates: bool = False,
) -> Iteration:
    """Iterate z <- z - rho d(z) (optionally Anderson-mixed, or averaged over the last two updates).

    `evaluate(z)` costs what it costs (one network call for the forward step); the loop evaluates at
    most `max_iter` iterates, stops as soon as every latent's residual is <= `tol`, or when the best
    residual has not dropped by a relative `stall_rtol` in `stall` evaluations, or ("diverged") when a
    residual is not finite or `divergence` times the best one. `average` replaces the
    update by the mean of the last two plain updates (Pan et al.'s empirical acceleration). Anderson is
    safeguarded: an iterate whose residual exceeds `restart` times the best one restarts the mixing with a
    plain step from the best iterate.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    if anderson and average:
        raise ValueError("choose Anderson acceleration or averaging, not both")
    schedule = _StepSizeState(step_size or StepSize.constant(1.0))
    mixer = Anderson(anderson) if anderson else None
    z = start
    residuals: list[float] = []
    iterates: list[torch.Tensor] = []
    best: tuple[float, torch.Tensor, Any, torch.Tensor | None] = (float("inf"), start, None, None)
    last_progress, previous_update = 0, None
    stop = "max_iter"
    for k in range(max_iter):
        evaluation = evaluate(z)
        residual = float(evaluation.residual.max())
        residuals.append(residual)
        if keep_iterates:
            iterates.append(z)
        if not torch.isfinite(evaluation.residual).all() or residual > divergence * best[0]:
            stop = "diverged"
            break
        if residual < best[0] * (1.0 - stall_rtol):
            last_progress = k
        if residual < best[0]:
            best = (residual, z, evaluation.extra, evaluation.direction)
        if tol is not None and residual <= tol:
            stop = "tolerance"
            break
        if stall is not None and k - last_progress >= stall:
            stop = "plateau"
            break
        if k == max_iter - 1:
            break
        rho = schedule.value(k)
        plain = z - rho * evaluation.direction
        if schedule.observe(residual) and mixer is not None:
            mixer.reset()  # the map changed with rho: old differences no longer describe it
        if mixer is not None and residual > restart * best[0]:
            mixer.reset()  # the mixed iterate went astray: start again from the best one
            z = best[1] - rho * best[3]
        elif mixer is not None:
            z = mixer.step(z, plain)
        elif average and previous_update is not None:
            z = 0.5 * (plain + previous_update)
        else:
            z = plain
        previous_update = plain
    residual, latent, extra, _ = best
    return Iteration(
        latent=latent, residual=residual, converged=tol is not None and residual <= tol, stop=stop,
        evaluations=len(residuals), residuals=residuals, iterates=iterates, extra=extra,
    )


def fixed_point(
    step_map: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    iterations: int,
    anderson: int = 0,
    average: bool = False,
    tol: float | None = None,
    keep_iterates: bool = True,
) -> Iteration:
    """Run `iterations` evaluations of z <- f(z) from `start` (f = `step_map`), the residual being
    ||f(z) - z|| / ||z|| per latent; the building block of fixed-point and ReNoise inversion.
    """

    def evaluate(z: torch.Tensor) -> Evaluation:
        image = step_map(z)
        difference = z - image
        return Evaluation(direction=difference, residual=per_latent_norm(difference) / per_latent_norm(z).clamp_min(1e-12), extra=image)

    return iterate(evaluate, start, max_iter=iterations, tol=tol, anderson=anderson, average=average, keep_iterates=keep_iterates)


def per_latent_norm(x: torch.Tensor) -> torch.Tensor:
    """The Euclidean norm of each latent of a batch ([B, ...] -> [B])."""
    return x.flatten(1).norm(dim=1)
