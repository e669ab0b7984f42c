"""Naive inversion: one network call per step, evaluated at the known (less noisy) latent.

For DDIM this is the usual DDIM inversion (the network sees the target timestep, the prediction is
taken at the current latent); for DPM-Solver++ it is the same multistep update run towards noise,
reusing the data predictions of the earlier inverse steps.
"""

from __future__ import annotations

import torch

from diffinv.inversion.driver import StepOutcome
from diffinv.models.denoiser import Denoiser
from diffinv.models.prediction import Point, Prediction, predict
from diffinv.sampler.schedule import Step
from diffinv.sampler.solvers import update


def explicit_step(
    denoiser: Denoiser,
    x: torch.Tensor,
    step: Step,
    history: list[tuple[Point, torch.Tensor]],
    evaluate_at: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Prediction]:
    """The explicit inverse of one step from the known latent `x`, towards noise.

    The network is evaluated at `evaluate_at` (default `x`, the naive choice; fixed-point methods pass
    their current estimate of the noisier latent) and its output is read as the prediction at `x`.
    """
    output = denoiser.output(x if evaluate_at is None else evaluate_at, step.timestep)
    prediction = predict(output, x, step.start, denoiser.prediction_type)
    return update(prediction, step.start, step.end, history), prediction


def naive_step(
    denoiser: Denoiser, x: torch.Tensor, step: Step, history: list[tuple[Point, torch.Tensor]], position: int
) -> StepOutcome:
    """`StepSolver` of naive inversion (no residual: measuring it would cost another network call)."""
    latent, prediction = explicit_step(denoiser, x, step, history)
    return StepOutcome(latent=latent, data_prediction=prediction.data)
