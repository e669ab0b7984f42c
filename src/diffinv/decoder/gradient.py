"""The baseline: gradient descent on ||D(z) - x||^2 by backpropagation through the decoder."""

from __future__ import annotations

import torch

from diffinv.decoder.iteration import Direction
from diffinv.models.autoencoder import Autoencoder


def gradient_direction(autoencoder: Autoencoder, image: torch.Tensor) -> Direction:
    """y -> (the gradient of ||D(y) - x||^2, that loss, None): one decode and one backward pass."""
    with torch.inference_mode(False):
        reference = image.float().clone()

    def direction(y: torch.Tensor) -> tuple[torch.Tensor, float, float | None]:
        with torch.inference_mode(False), torch.enable_grad():
            leaf = y.detach().clone().requires_grad_(True)
            loss = (autoencoder.decode(leaf).float() - reference).pow(2).sum()
            (grad,) = torch.autograd.grad(loss, leaf)
        return grad.detach().float(), float(loss.detach()), None

    return direction
