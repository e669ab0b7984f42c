"""The baseline: gradient descent on the fit residual ||r(D(z))||^2 by backpropagation through the decoder."""

from __future__ import annotations

import torch

from diffinv.decoder.iteration import Direction
from diffinv.decoder.target import ImageTarget
from diffinv.models.autoencoder import Autoencoder


def gradient_direction(autoencoder: Autoencoder, target: ImageTarget) -> Direction:
    """y -> (the gradient of ||r(D(y))||^2, that loss, None): one decode and one backward pass.

    r is `target.residual` (D(y) - x for a plain target; clipped and rounded pixels the decoding
    already satisfies cost nothing otherwise).
    """
    with torch.inference_mode(False):
        reference = target.image.float().clone()
        fit = None if target.plain else ImageTarget(reference, target.clipped, target.rounded)

    def direction(y: torch.Tensor) -> tuple[torch.Tensor, float, float | None]:
        with torch.inference_mode(False), torch.enable_grad():
            leaf = y.detach().clone().requires_grad_(True)
            decoded = autoencoder.decode(leaf).float()
            residual = decoded - reference if fit is None else fit.residual(decoded)
            loss = residual.pow(2).sum()
            (grad,) = torch.autograd.grad(loss, leaf)
        return grad.detach().float(), float(loss.detach()), None

    return direction
