"""The one-step update of DDIM and DPM-Solver++ multistep, written once, and the stepper interface.

Every sampler step here is

    x_end = alpha_end * x0 + sigma_end * eps + sum_j w_j * x0_j

where (x0, eps) is the network's prediction at the start of the step and the sum is the multistep
correction over the data predictions of earlier steps (empty for DDIM and first-order steps). DDIM
with eta 0 and first-order DPM-Solver++ are the same update; orders 2 and 3 are DPM-Solver++(2M) and
(3M) with the midpoint rule, as in diffusers. The same function runs sampling (noisy -> clean), the
naive inverse (clean -> noisy, with the network evaluated at the known end) and the residual of the
implicit equation every exact inversion method solves.

Samplers whose step is not of that form (a second network call, a corrector, an eps combination) are
`Stepper`s: one `step(denoiser, x, step, memory) -> (x_end, record)` in their own module, the memory being
the `Record`s of the earlier steps. `SingleCall` is the stepper of `update` itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from diffinv.models.prediction import NoiseLevel, Prediction, predict


def multistep_weights(start: NoiseLevel, end: NoiseLevel, history: Sequence[NoiseLevel]) -> list[float]:
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
    start: NoiseLevel,
    end: NoiseLevel,
    history: Sequence[tuple[NoiseLevel, torch.Tensor]] = (),
) -> torch.Tensor:
    """One solver step from noise level `start` to `end`; `history` holds (level, x0) of earlier steps."""
    x_end = end.alpha * prediction.data + end.sigma * prediction.noise
    if history:
        weights = multistep_weights(start, end, [point for point, _ in history])
        x_end = x_end + weights[0] * prediction.data
        for weight, (_, data) in zip(weights[1:], history):
            x_end = x_end + weight * data
    return x_end


def usable_history(start: NoiseLevel, history: Sequence[tuple[NoiseLevel, torch.Tensor]], order: int) -> list[tuple[NoiseLevel, torch.Tensor]]:
    """At most order-1 earlier (level, x0) pairs whose log-SNR is finite and distinct from `start`'s.

    A level at sigma 0 (log-SNR infinite) carries no slope information, so the inverse direction,
    which starts there, falls back to a lower order exactly as the forward sampler does at its end.
    """
    kept: list[tuple[NoiseLevel, torch.Tensor]] = []
    for point, data in history[: order - 1]:
        if not math.isfinite(point.log_snr) or point.log_snr == start.log_snr:
            break
        kept.append((point, data))
    return kept


@dataclass
class Record:
    """What one sampler step leaves for the steps after it (and the inversion methods).

    `point` is the level the step's first network call saw, `output` the raw (guided) network output there,
    `prediction` the (x0, eps) it means; `latent` is the latent a later corrector starts from (UniPC's
    corrected latent) and `order` the order the step used (UniPC's corrector reuses it)."""

    point: NoiseLevel
    output: torch.Tensor
    prediction: Prediction
    latent: torch.Tensor | None = None
    order: int = 1

    @property
    def data(self) -> torch.Tensor:
        return self.prediction.data

    def tiled(self, count: int) -> "Record":
        """The record for the latents repeated `count` times along the batch."""
        def tile(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.repeat(count, *([1] * (tensor.ndim - 1)))

        return Record(self.point, tile(self.output), Prediction(tile(self.prediction.data), tile(self.prediction.noise)),
                      tile(self.latent), self.order)


class Stepper(Protocol):
    """How a sampler's step runs: from latent `x` at `step.start` to `step.end`, calling `denoiser` (anything with
    `output(x, timestep)` and `prediction_type`) where it needs, reading `memory` (the records of the earlier
    steps, most recent first). The same call samples (noisy -> clean), runs the naive inverse on the reversed
    step and is the map whose preimage exact inversion solves for."""

    def step(self, denoiser: Any, x: torch.Tensor, step: Any, memory: Sequence[Record]) -> tuple[torch.Tensor, Record]: ...


def evaluate(denoiser: Any, x: torch.Tensor, timestep: int | float, point: NoiseLevel) -> Record:
    """One network call at `x` (level `point`, the network seeing `timestep`) as a record."""
    output = denoiser.output(x, timestep)
    return Record(point, output, predict(output, x, point, denoiser.prediction_type))


class SingleCall:
    """The stepper of `update`: one network call at the step's start, the multistep sum over earlier x0's."""

    def step(self, denoiser: Any, x: torch.Tensor, step: Any, memory: Sequence[Record]) -> tuple[torch.Tensor, Record]:
        record = evaluate(denoiser, x, step.timestep, step.start)
        history = [(earlier.point, earlier.data) for earlier in memory[: step.order - 1]]
        return update(record.prediction, step.start, step.end, history), record


SINGLE_CALL = SingleCall()


def usable_records(start: NoiseLevel, records: Sequence[Record], limit: int = 3) -> list[Record]:
    """At most `limit` earlier records whose level has a finite log-SNR distinct from `start`'s (the same rule
    as `usable_history`: a record made at sigma 0 carries no slope, so the step falls back to a lower order)."""
    kept: list[Record] = []
    for record in records[:limit]:
        if not math.isfinite(record.point.log_snr) or record.point.log_snr == start.log_snr:
            break
        kept.append(record)
    return kept


def multistep_order(index: int, solver_order: int, lower_final: bool, lower_second: bool) -> int:
    """The order a diffusers multistep scheduler (DPM-Solver++, DEIS) uses at step `index`: warming up from 1
    (diffusers' lower_order_nums), capped at `solver_order`, lowered to 1 at the last step and to 2 at the one
    before where the scheduler says so."""
    warm_up = min(index, solver_order)
    if solver_order == 1 or warm_up < 1 or lower_final:
        return 1
    if solver_order == 2 or warm_up < 2 or lower_second:
        return 2
    return 3
