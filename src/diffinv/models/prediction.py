"""What a network's output means at a noise level: the level (alpha, sigma) of x = alpha x0 + sigma eps and
the conversion of an epsilon, v, sample or flow (velocity) prediction into the pair (x0, eps) every sampler
step uses. Diffusion models sit on variance-preserving levels (alpha^2 + sigma^2 = 1); flow-matching models
(SD3, Flux) on the straight path alpha = 1 - sigma, where the network predicts the velocity v = eps - x0.

It belongs to the models layer because the prediction type is a property of the trained network;
the samplers (`diffinv.sampler`) build their steps on these two types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow")


@dataclass(frozen=True)
class NoiseLevel:
    """A noise level: x = alpha * x0 + sigma * eps; lambda = log(alpha / sigma) (inf at sigma 0, -inf at alpha 0)."""

    alpha: float
    sigma: float

    @property
    def log_snr(self) -> float:
        if self.sigma == 0.0:
            return math.inf
        if self.alpha == 0.0:
            return -math.inf
        return math.log(self.alpha) - math.log(self.sigma)


@dataclass
class Prediction:
    """What the network says about a latent x at a noise level: its clean part x0 and its noise eps."""

    data: torch.Tensor
    noise: torch.Tensor


def predict(output: torch.Tensor, x: torch.Tensor, point: NoiseLevel, prediction_type: str) -> Prediction:
    """Turn a (guided) network output at latent `x` and noise level `point` into (x0, eps)."""
    alpha, sigma = point.alpha, point.sigma
    if prediction_type == "epsilon":
        return Prediction(data=(x - sigma * output) / alpha, noise=output)
    if prediction_type == "v_prediction":
        return Prediction(data=alpha * x - sigma * output, noise=alpha * output + sigma * x)
    if prediction_type == "sample":
        return Prediction(data=output, noise=(x - alpha * output) / sigma)
    if prediction_type == "flow":  # v = eps - x0 on x = (1 - sigma) x0 + sigma eps
        return Prediction(data=x - sigma * output, noise=x + alpha * output)
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")
