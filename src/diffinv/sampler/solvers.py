"""The one-step update of DDIM and DPM-Solver++ multistep, written once.

Every sampler step here is

    x_end = alpha_end * x0 + sigma_end * eps + sum_j w_j * x0_j

where (x0, eps) is the network's prediction at the start of the step and the sum is the multistep
correction over the data predictions of earlier steps (empty for DDIM and first-order steps). DDIM
with eta 0 and first-order DPM-Solver++ are the same update; orders 2 and 3 are DPM-Solver++(2M) and
(3M) with the midpoint rule, as in diffusers. The same function runs sampling (noisy -> clean), the
naive inverse (clean -> noisy, with the network evaluated at the known end) and the residual of the
implicit equation every exact inversion method solves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from diffinv.models.prediction import Point, Prediction


def multistep_weights(start: Point, end: Point, history: Sequence[Point]) -> list[float]:
    """Weights of the DPM-Solver++ correction on [x0_start, x0_history...] (order = len(history) + 1).

    Written for any direction in log-SNR, so the same weights serve the naive inverse.
    """
    order = len(history) + 1
    if order == 1:
        return [0.0]
    h = end.log_snr - start.log_snr
    exp_h = math.exp(-h)
    r0 = (start.log_snr - history[0].log_snr) / h
    if order == 2:
        half_c = 0.5 * end.alpha * (1.0 - exp_h)
        return [half_c / r0, -half_c / r0]
    if order == 3:
        r1 = (history[0].log_snr - history[1].log_snr) / h
        k1 = end.alpha * ((exp_h - 1.0) / h + 1.0)
        k2 = -end.alpha * ((exp_h - 1.0 + h) / h**2 - 0.5)
        q = (k1 * r0 + k2) / (r0 + r1)
        first = k1 + q  # weight of D1_0 = (m0 - m1) / r0
        return [first / r0, -first / r0 - q / r1, q / r1]
    raise ValueError(f"solver order must be 1, 2 or 3, got {order}")


def update(
    prediction: Prediction,
    start: Point,
    end: Point,
    history: Sequence[tuple[Point, torch.Tensor]] = (),
) -> torch.Tensor:
    """One solver step from noise level `start` to `end`; `history` holds (level, x0) of earlier steps."""
    x_end = end.alpha * prediction.data + end.sigma * prediction.noise
    if history:
        weights = multistep_weights(start, end, [point for point, _ in history])
        x_end = x_end + weights[0] * prediction.data
        for weight, (_, data) in zip(weights[1:], history):
            x_end = x_end + weight * data
    return x_end


def usable_history(start: Point, history: Sequence[tuple[Point, torch.Tensor]], order: int) -> list[tuple[Point, torch.Tensor]]:
    """At most order-1 earlier (level, x0) pairs whose log-SNR is finite and distinct from `start`'s.

    A level at sigma 0 (log-SNR infinite) carries no slope information, so the inverse direction,
    which starts there, falls back to a lower order exactly as the forward sampler does at its end.
    """
    kept: list[tuple[Point, torch.Tensor]] = []
    for point, data in history[: order - 1]:
        if not math.isfinite(point.log_snr) or point.log_snr == start.log_snr:
            break
        kept.append((point, data))
    return kept
