"""``deis`` and ``deis3``: diffusers' `DEISMultistepScheduler` (log-rho, order 2 and 3).

DEIS integrates the noise prediction exactly for a polynomial (in log rho, rho = sigma / alpha) fitted through
the current and up to two earlier eps: x_t = alpha_t (x / alpha_s0 + sum_j c_j eps_j), c_j the integral of the
j-th Lagrange basis polynomial over [rho_s0, rho_t]; the first order is DDIM. Orders follow diffusers
(warm-up from 1, lower orders at the end below 15 steps with `lower_order_final`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from diffusers import DEISMultistepScheduler

from diffinv.models.prediction import NoiseLevel
from diffinv.sampler.registry import Sampler
from diffinv.sampler.schedule import Step, sigma_point
from diffinv.sampler.update import Record, evaluate, multistep_order


def _rho(point: NoiseLevel) -> float:
    return point.sigma / point.alpha


def _second(t: float, b: float, c: float) -> float:
    """Antiderivative (in rho) of the order-2 Lagrange basis in log rho through nodes b (one) and c (zero)."""
    return t * (-math.log(c) + math.log(t) - 1.0) / (math.log(b) - math.log(c))


def _third(t: float, b: float, c: float, d: float) -> float:
    """Antiderivative of the order-3 Lagrange basis in log rho: one at b, zero at c and d."""
    lt, lc, ld, lb = math.log(t), math.log(c), math.log(d), math.log(b)
    return t * (lc * (ld - lt + 1.0) - ld * lt + ld + lt**2 - 2.0 * lt + 2.0) / ((lb - lc) * (lb - ld))


def deis_weights(start: NoiseLevel, end: NoiseLevel, earlier: Sequence[NoiseLevel]) -> list[float]:
    """Weights of [eps at start, eps at earlier levels...] (order = len(earlier) + 1) in x_t / alpha_t."""
    rt, r0 = _rho(end), _rho(start)
    if not earlier:
        h = end.log_snr - start.log_snr
        return [-end.sigma * math.expm1(h) / end.alpha]
    if len(earlier) == 1:
        r1 = _rho(earlier[0])
        return [_second(rt, r0, r1) - _second(r0, r0, r1), _second(rt, r1, r0) - _second(r0, r1, r0)]
    r1, r2 = _rho(earlier[0]), _rho(earlier[1])
    return [_third(rt, r0, r1, r2) - _third(r0, r0, r1, r2), _third(rt, r1, r2, r0) - _third(r0, r1, r2, r0),
            _third(rt, r2, r0, r1) - _third(r0, r2, r0, r1)]


class DEIS:
    """The DEIS stepper: one network call at the start, eps combined with the earlier steps' eps."""

    def step(self, denoiser: Any, x: torch.Tensor, step: Step, memory: Sequence[Record]) -> tuple[torch.Tensor, Record]:
        record = evaluate(denoiser, x, step.timestep, step.start)
        earlier = list(memory[: step.order - 1])
        eps = [record.prediction.noise] + [r.prediction.noise for r in earlier]
        weights = deis_weights(step.start, step.end, [r.point for r in earlier])
        if not earlier:  # the first order is written as diffusers' (alpha_t / alpha_s) x - sigma_t (e^h - 1) eps
            h = step.end.log_snr - step.start.log_snr
            return (step.end.alpha / step.start.alpha) * x - (step.end.sigma * math.expm1(h)) * eps[0], record
        total = x / step.start.alpha
        for weight, value in zip(weights, eps):
            total = total + weight * value
        return step.end.alpha * total, record


def deis_order(index: int, count: int, solver_order: int, lower_order_final: bool) -> int:
    """The order diffusers' DEISMultistepScheduler.step uses at step `index`."""
    lowered = lower_order_final and count < 15
    return multistep_order(index, solver_order, lowered and index == count - 1, lowered and index == count - 2)


def deis_steps(scheduler: DEISMultistepScheduler, num_steps: int) -> list[Step]:
    """DEIS steps on the scheduler's sigmas (variance-preserving levels)."""
    config = scheduler.config
    if config.thresholding or config.algorithm_type != "deis" or config.get("use_flow_sigmas", False):
        raise ValueError("only DEIS with algorithm_type='deis', no thresholding and no flow sigmas is supported")
    points = [sigma_point(sigma) for sigma in scheduler.sigmas.double().numpy()]
    timesteps = [int(t) for t in scheduler.timesteps]
    steps = []
    for index, timestep in enumerate(timesteps):
        order = deis_order(index, len(timesteps), config.solver_order, config.lower_order_final)
        history = tuple(points[index - back] for back in range(1, order))
        steps.append(Step(index, timestep, points[index], points[index + 1], order, history, (), DEIS_STEPPER))
    return steps


DEIS_STEPPER = DEIS()

DEIS2 = Sampler("deis", DEISMultistepScheduler, deis_steps, options={"solver_order": 2},
                matches=lambda config: config.get("solver_order", 2) == 2, description="DEIS log-rho, order 2")
DEIS3 = Sampler("deis3", DEISMultistepScheduler, deis_steps, options={"solver_order": 3},
                matches=lambda config: config.get("solver_order", 2) == 3, description="DEIS log-rho, order 3")
