"""``unipc`` and ``unipc3``: diffusers' `UniPCMultistepScheduler` (bh2, data prediction), order 2 and 3.

Step k calls the network once, at its latent p_k (level k), giving the data prediction m_k. Unless the
config's `disable_corrector` lists step k - 1, the corrector UniC first replaces p_k by c_k; the predictor
UniP then goes from c_k to level k + 1 with m_k and up to order - 1 earlier predictions. The step's record
keeps m_k, c_k and its order.

diffusers builds c_k from the previous corrected latent c_{k-1}, exactly as the previous predictor built
p_k from it (same levels, same order), so c_k = p_k + (UniC - UniP): c_{k-1} cancels and the corrector is a
combination of m_k, m_{k-1} and the earlier predictions with O(h) weights. That is how it is written here:
the step then reads only earlier predictions, like DPM-Solver++, so exact inversion can hold them at
estimates; holding c_{k-1} (weight O(1)) at an estimate instead makes the step-by-step inverse amplify its
error (measured: noise NMSE 1.7 on the tiny pipeline). Run backwards from sigma 0 (naive inversion's first
step) UniP's x / sigma_s0 is undefined, so that step is DDIM's, with the network's eps. Orders follow
diffusers (warm-up from 1, `lower_order_final`). Only bh2 is offered: diffusers' bh1 (B(h) = h) returns NaN
when the last sigma is 0, its default, so there is nothing to match.

Both UniP and UniC are x_t = (sigma_t / sigma_s0) x - alpha_t (e^{-h} - 1) m0 - alpha_t B(h) sum_i rho_i D_i
with D_i = (m_i - m0) / r_i, r_i = (lambda_i - lambda_s0) / h, and rho solving the order conditions
sum_i rho_i r_i^(k-1) = b_k (phi-function moments); the predictor takes rho = 1/2 at order 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers import UniPCMultistepScheduler

from diffinv.models.prediction import NoiseLevel
from diffinv.sampler.registry import Sampler
from diffinv.sampler.schedule import Step, sigma_point
from diffinv.sampler.update import Record, evaluate, update


def _coefficients(s0: NoiseLevel, t: NoiseLevel, earlier: Sequence[NoiseLevel], order: int, bh2: bool):
    """(h phi_1, B(h), r_i, predictor rhos, corrector rhos) of a UniPC update from level s0 to t of `order`."""
    h = t.log_snr - s0.log_snr
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = math.expm1(hh) if bh2 else hh
    rks = [(point.log_snr - s0.log_snr) / h for point in earlier[: order - 1]] + [1.0]
    moments, phi_k, factorial = [], h_phi_1 / hh - 1.0, 1.0
    for i in range(1, order + 1):
        moments.append(phi_k * factorial / b_h)
        factorial *= i + 1
        phi_k = phi_k / hh - 1.0 / factorial
    powers = np.array([[r ** (i - 1) for r in rks] for i in range(1, order + 1)])
    if order == 1:
        predictor: list[float] = []
    elif order == 2:
        predictor = [0.5]
    else:
        predictor = [float(v) for v in np.linalg.solve(powers[:-1, :-1], np.array(moments[:-1]))]
    corrector = [0.5] if order == 1 else [float(v) for v in np.linalg.solve(powers, np.array(moments))]
    return h_phi_1, b_h, rks[:-1], predictor, corrector


def predictor_update(x: torch.Tensor, m0: torch.Tensor, s0: NoiseLevel, t: NoiseLevel, earlier: Sequence[tuple[NoiseLevel, torch.Tensor]],
                     order: int, bh2: bool) -> torch.Tensor:
    """UniP: x from level s0 to t with the prediction m0 at s0 and `earlier` (level, x0), most recent first."""
    h_phi_1, b_h, rks, rhos, _ = _coefficients(s0, t, [point for point, _ in earlier], order, bh2)
    x_t = (t.sigma / s0.sigma) * x - (t.alpha * h_phi_1) * m0
    if not rhos:
        return x_t
    total = sum(rho * (data - m0) / r for rho, r, (_, data) in zip(rhos, rks, earlier))
    return x_t - (t.alpha * b_h) * total


def corrector_shift(m_t: torch.Tensor, m0: torch.Tensor, s0: NoiseLevel, t: NoiseLevel, earlier: Sequence[tuple[NoiseLevel, torch.Tensor]],
                    order: int, bh2: bool) -> torch.Tensor:
    """UniC minus UniP from the same latent at s0 to t (both of `order`, as diffusers pairs them): what the
    corrector adds to the predicted latent at t, given the prediction m_t made there. The latent at s0
    cancels, so a step needs only the predictions (see the module docstring)."""
    _, b_h, rks, predictor, corrector = _coefficients(s0, t, [point for point, _ in earlier], order, bh2)
    total = corrector[-1] * (m_t - m0)
    for index, (r, (_, data)) in enumerate(zip(rks, earlier)):
        rho_p = predictor[index] if index < len(predictor) else 0.0
        total = total + (corrector[index] - rho_p) * (data - m0) / r
    return -(t.alpha * b_h) * total


class UniPC:
    """The UniPC stepper (predictor, and the corrector where `step.extra` says so)."""

    def __init__(self, bh2: bool = True) -> None:
        self.bh2 = bh2

    def step(self, denoiser: Any, x: torch.Tensor, step: Step, memory: Sequence[Record]) -> tuple[torch.Tensor, Record]:
        record = evaluate(denoiser, x, step.timestep, step.start)
        if step.start.sigma == 0.0:  # run backwards from the clean end: UniP's x / sigma is 0 / 0, take DDIM's step
            return update(record.prediction, step.start, step.end), record
        base = x
        if step.extra and memory:
            previous = memory[0]
            order = min(previous.order, len(memory))
            earlier = [(r.point, r.data) for r in memory[1:order]]
            base = x + corrector_shift(record.data, previous.data, previous.point, step.start, earlier, order, self.bh2)
        order = min(step.order, len(memory) + 1)
        earlier = [(r.point, r.data) for r in memory[: order - 1]]
        record.latent, record.order = base, order
        return predictor_update(base, record.data, step.start, step.end, earlier, order, self.bh2), record


def unipc_steps(scheduler: UniPCMultistepScheduler, num_steps: int) -> list[Step]:
    """UniPC's steps: orders by diffusers' rules, the corrector where `disable_corrector` allows it."""
    config = scheduler.config
    if config.thresholding or not config.predict_x0 or config.solver_p is not None or config.get("use_flow_sigmas", False):
        raise ValueError("only UniPC with predict_x0=True, no solver_p, no thresholding and no flow sigmas is supported")
    if config.solver_type != "bh2":
        raise ValueError(f"only UniPC's solver_type bh2 is supported, not {config.solver_type!r}")
    points = [sigma_point(sigma) for sigma in scheduler.sigmas.double().numpy()]
    timesteps = [int(t) for t in scheduler.timesteps]
    count, solver_order = len(timesteps), config.solver_order
    disabled = set(scheduler.disable_corrector)
    steps, orders = [], []
    for index, timestep in enumerate(timesteps):
        order = min(solver_order, count - index) if config.lower_order_final else solver_order
        order = min(order, min(index, solver_order) + 1)
        corrector = index > 0 and (index - 1) not in disabled
        reads = max(order - 1, orders[-1] if corrector else 0)
        history = tuple(points[index - back] for back in range(1, reads + 1))
        steps.append(Step(index, timestep, points[index], points[index + 1], order, history,
                          ("corrector",) if corrector else (), UNIPC_BH2))
        orders.append(order)
    return steps


UNIPC_BH2 = UniPC(bh2=True)


def _order(order: int):
    return lambda config: (config.get("solver_order", 2) == order and config.get("predict_x0", True)
                           and config.get("solver_type", "bh2") == "bh2")


UNIPC2 = Sampler("unipc", UniPCMultistepScheduler, unipc_steps, options={"solver_order": 2}, matches=_order(2),
                 description="UniPC bh2, order 2, corrector")
UNIPC3 = Sampler("unipc3", UniPCMultistepScheduler, unipc_steps, options={"solver_order": 3}, matches=_order(3),
                 description="UniPC bh2, order 3, corrector")
