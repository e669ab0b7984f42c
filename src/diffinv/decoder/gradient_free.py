"""The gradient-free family (Hong et al., NeurIPS 2024): every method follows T(z) = E(D(z)) - E(x).

For a clipped or rounded image (`ImageTarget`) D(z) is replaced by x + r(D(z)), the decoding with every
pixel the image allows set to the image's value, so T vanishes at the true latent of a saved image.
`gradient_free_direction` evaluates T (one decode and one encode, no backpropagation), the direction
the forward step, inertial KM and gradient-free Adam all step along; `step_condition` checks the
theory's step-size condition of the first two against the cocoercivity the run observed.
"""

from __future__ import annotations

from typing import Any

import torch

from diffinv.decoder.cocoercivity import inertial_km_lambda_max, max_step_size, residual_operator
from diffinv.decoder.iteration import Direction, squared_norm
from diffinv.decoder.result import StepCondition
from diffinv.decoder.target import ImageTarget
from diffinv.models.autoencoder import Autoencoder


def gradient_free_direction(autoencoder: Autoencoder, image: ImageTarget, encoded: torch.Tensor) -> Direction:
    """y -> (T(y), ||r(D(y))||^2, ||T(y)||^2) with encoded = E(x)."""
    def direction(y: torch.Tensor) -> tuple[torch.Tensor, float, float | None]:
        t, decoded = residual_operator(autoencoder, y, encoded, None if image.plain else image.fitted)
        return t.float(), squared_norm(image.residual(decoded)), squared_norm(t)

    return direction


def step_condition(method: str, opts: dict[str, Any], beta_observed: float | None) -> StepCondition | None:
    """The step-size condition of a forward-step or inertial KM run against the observed cocoercivity (None otherwise)."""
    if method == "forward-step":
        step, alpha, beta_assumed, rule = float(opts["rho"]), 0.0, None, "forward step: rho < 2 beta"
    elif method == "inertial-km":
        alpha = float(opts["alpha"])
        beta_assumed = float(opts["beta"])
        step = 2 * float(opts["lam"]) * beta_assumed
        rule = f"inertial KM: lambda < lambda_max(alpha={alpha:g}) = {inertial_km_lambda_max(alpha):.4g} and beta <= observed beta"
    else:
        return None
    lam_max = inertial_km_lambda_max(alpha)
    if beta_observed is None:
        holds = None if method == "forward-step" else (False if float(opts["lam"]) >= lam_max else None)
        bound = None
    else:
        bound = max_step_size(beta_observed, alpha)
        if method == "forward-step":
            holds = beta_observed > 0 and step < bound
        else:
            holds = float(opts["lam"]) < lam_max and 0 < beta_assumed <= beta_observed
    return StepCondition(rule, step, lam_max, beta_assumed, beta_observed, bound, holds)
