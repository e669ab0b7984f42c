"""The iteration loop that solves one implicit equation, shared by every iterative method.

Every iterative inversion method here runs the same loop (`solve_iteratively`): from z_0, evaluate a direction
d(z_k) and a per-latent residual, stop when the residual is below a tolerance, else move to

    z_{k+1} = z_k - rho_k d(z_k)                       (plain)
    z_{k+1} = Anderson(z_k, z_k - rho_k d(z_k))         (accelerated, window m)

What d is decides the method:

- forward step method (Hong et al.):  d = Phi(z) - x, for the equation Phi(z) = x;
- gradient descent:                   d = J_Phi(z)^T (Phi(z) - x), the gradient of ||Phi(z) - x||^2 / 2;
- fixed-point iteration z <- f(z):    d = z - f(z) with rho = 1 (Pan et al.; ReNoise builds on it).

The step size rho_k follows the schedule of Hong et al.'s code: a linear warm-up over the first
iterations, then halving whenever the residual has not improved for `patience` iterations
(`StepSize`). The loop returns an iterate whose residual it measured (the best one unless the tolerance was
met), so the reported residual is the true residual of what is returned; except with `final_update`, where a
latent whose last two residuals show a contraction that puts the next update within the tolerance gets that
update, unevaluated, with its residual estimated (r_k^2 / r_{k-1}) and the result marked `estimated`: it
saves the evaluation that would only confirm it.
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
    """What `solve_iteratively` did: the returned iterate, its residual, and the history of residuals.

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
    #: the returned residual is estimated (`final_update`) for at least one latent, not measured.
    estimated: bool = False


def solve_iteratively(
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
    final_update: bool = False,
) -> Iteration:
    """Iterate z <- z - rho d(z) (optionally Anderson-mixed, or averaged over the last two updates).

    `evaluate(z)` costs what it costs (one network call for the forward step). Each latent of the batch
    is tracked on its own, so a batch ends where its members would alone: a latent is done when its
    residual is <= `tol`, when its best residual has not dropped by a relative `stall_rtol` in `stall`
    evaluations, or ("diverged") when its residual is not finite or `divergence` times its best; a done
    latent stays at its best iterate while the others go on, and the loop ends when every latent is done
    or after `max_iter` evaluations. Each latent's best iterate is returned. `average` replaces the update
    by the mean of the last two plain updates (Pan et al.'s empirical acceleration). Anderson is
    safeguarded: a latent whose residual exceeds `restart` times its best restarts the mixing, from its
    best iterate with a plain step. `final_update`: see the module docstring.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    if anderson and average:
        raise ValueError("choose Anderson acceleration or averaging, not both")
    schedule = _StepSizeState(step_size or StepSize.constant(1.0))
    mixer = Anderson(anderson) if anderson else None
    count = start.shape[0]
    z = start
    residuals: list[float] = []
    iterates: list[torch.Tensor] = []
    best_residual = torch.full((count,), float("inf"), dtype=torch.float64)
    best_latent, best_direction, best_extra = start.clone(), torch.zeros_like(start), None
    last_progress = torch.zeros(count, dtype=torch.long)
    reason = ["max_iter"] * count
    done = torch.zeros(count, dtype=torch.bool)
    previous_update = None
    last_residual = torch.full((count,), float("inf"), dtype=torch.float64)
    estimated = torch.zeros(count, dtype=torch.bool)
    for k in range(max_iter):
        evaluation = evaluate(z)
        residual = evaluation.residual.detach().double().cpu().reshape(count)
        residuals.append(float(residual.max()))
        if keep_iterates:
            iterates.append(z)
        finite = torch.isfinite(residual)
        diverged = ~done & (~finite | (residual > divergence * best_residual))
        improved = ~done & finite & (residual < best_residual)
        last_progress[improved & (residual < best_residual * (1.0 - stall_rtol))] = k
        if bool(improved.any()):
            rows = improved.to(z.device)
            best_latent[rows] = z[rows]
            best_direction[rows] = evaluation.direction[rows]
            if isinstance(evaluation.extra, torch.Tensor):
                best_extra = evaluation.extra.clone() if best_extra is None else best_extra
                best_extra[rows] = evaluation.extra[rows]
            else:
                best_extra = evaluation.extra
            best_residual = torch.where(improved, residual, best_residual)
        finishing = torch.zeros(count, dtype=torch.bool)
        for row in range(count):
            if done[row]:
                continue
            if diverged[row]:
                reason[row] = "diverged"
            elif tol is not None and best_residual[row] <= tol:
                reason[row] = "tolerance"
            elif final_update and tol is not None and improved[row] and bool(torch.isfinite(last_residual[row])) \
                    and residual[row] <= 0.5 * last_residual[row] \
                    and residual[row] ** 2 / last_residual[row] <= tol:
                reason[row], finishing[row] = "tolerance", True
            elif stall is not None and k - int(last_progress[row]) >= stall:
                reason[row] = "plateau"
            else:
                continue
            done[row] = True
        last_residual_before, last_residual = last_residual, torch.where(finite, residual, last_residual)
        if not bool(finishing.any()) and (bool(done.all()) or k == max_iter - 1):
            break
        active = ~done
        rho = schedule.value(k)
        plain = z - rho * evaluation.direction
        if bool(active.any()) and schedule.observe(float(residual[active].max())) and mixer is not None:
            mixer.reset()  # the map changed with rho: old differences no longer describe it
        astray = active & (residual > restart * best_residual)
        if mixer is not None and bool(astray.any()):
            mixer.reset()  # a mixed iterate went astray: start again from the best one
            z = torch.where(astray.view(-1, *[1] * (z.ndim - 1)).to(z.device), best_latent - rho * best_direction, plain)
        elif mixer is not None:
            z = mixer.step(z, plain)
        elif average and previous_update is not None:
            z = 0.5 * (plain + previous_update)
        else:
            z = plain
        previous_update = plain
        if bool(finishing.any()):  # one update past the last evaluated iterate, its residual estimated
            best_latent[finishing.to(z.device)] = z[finishing.to(z.device)]
            best_residual = torch.where(finishing, residual**2 / last_residual_before, best_residual)
            estimated |= finishing
        if bool(done.all()) or k == max_iter - 1:
            break
        if bool(done.any()):
            z = torch.where(done.view(-1, *[1] * (z.ndim - 1)).to(z.device), best_latent, z)
    worst = int(best_residual.argmax())
    residual = float(best_residual.max())
    converged = tol is not None and residual <= tol
    return Iteration(
        latent=best_latent, residual=residual, converged=converged, stop="tolerance" if converged else reason[worst],
        evaluations=len(residuals), residuals=residuals, iterates=iterates, extra=best_extra,
        estimated=bool(estimated.any()),
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

    return solve_iteratively(evaluate, start, max_iter=iterations, tol=tol, anderson=anderson, average=average, keep_iterates=keep_iterates)


def per_latent_norm(x: torch.Tensor) -> torch.Tensor:
    """The Euclidean norm of each latent of a batch ([B, ...] -> [B])."""
    return x.flatten(1).norm(dim=1)
