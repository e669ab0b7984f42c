"""Naive inversion: the sampler's step run backwards, the network evaluated at the known (less noisy) latent.

For DDIM this is the usual DDIM inversion (the network sees the target timestep, the prediction is
taken at the current latent); for DPM-Solver++ it is the same multistep update run towards noise,
reusing the data predictions of the earlier inverse steps. A sampler with its own stepper (PNDM, UniPC,
Heun, DEIS) runs that stepper on the reversed step, reading the records of the earlier inverse steps, so
its network calls happen where the sampler would make them, starting from the known end (Heun: at the
known latent, then at the Euler point it reaches).
"""

from __future__ import annotations

import torch

from diffinv.inversion.driver import StepOutcome
from diffinv.models.denoiser import Denoiser
from diffinv.models.prediction import Prediction, predict
from diffinv.sampler.sampling import run_step
from diffinv.sampler.schedule import Step
from diffinv.sampler.update import Record, update


class EvaluatedAt:
    """The denoiser with its first call made at `at`, the output read as if made at the latent asked about
    (ReNoise's and EasyInv's "network at another latent"); later calls go through unchanged."""

    def __init__(self, denoiser: Denoiser, at: torch.Tensor) -> None:
        self.denoiser, self.at, self.used = denoiser, at, False
        self.prediction_type = denoiser.prediction_type

    def output(self, x: torch.Tensor, timestep: int | float) -> torch.Tensor:
        if not self.used:
            self.used = True
            x = self.at
        return self.denoiser.output(x, timestep)


def inverse_step(
    denoiser: Denoiser,
    x: torch.Tensor,
    step: Step,
    history: list,
    evaluate_at: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Prediction, Record | None]:
    """The explicit inverse of one step from the known latent `x`, towards noise: (latent, prediction, record).

    The network's first call is at `evaluate_at` (default `x`, the naive choice; fixed-point methods pass
    their current estimate of the noisier latent) and its output is read as the prediction at `x`. `history`
    is (level, x0) pairs for the single-call update, the earlier inverse steps' records for a stepper."""
    if step.stepper is not None:
        caller = denoiser if evaluate_at is None else EvaluatedAt(denoiser, evaluate_at)
        latent, record = run_step(caller, x, step, history)
        return latent, record.prediction, record
    output = denoiser.output(x if evaluate_at is None else evaluate_at, step.timestep)
    prediction = predict(output, x, step.start, denoiser.prediction_type)
    return update(prediction, step.start, step.end, history), prediction, None


def explicit_step(
    denoiser: Denoiser,
    x: torch.Tensor,
    step: Step,
    history: list,
    evaluate_at: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Prediction]:
    """`inverse_step` without the record: (latent, prediction)."""
    latent, prediction, _ = inverse_step(denoiser, x, step, history, evaluate_at)
    return latent, prediction


def naive_step(
    denoiser: Denoiser, x: torch.Tensor, step: Step, history: list, position: int
) -> StepOutcome:
    """`InverseStep` of naive inversion (no residual: measuring it would cost another network call)."""
    latent, prediction, record = inverse_step(denoiser, x, step, history)
    return StepOutcome(latent=latent, data_prediction=prediction.data, record=record)
