"""Anderson acceleration of a fixed-point iteration z <- G(z), for tensors of any shape.

Type-II Anderson mixing with a window of the last m differences: with f_k = G(z_k) - z_k,

    gamma = argmin || f_k - dF gamma ||,   z_{k+1} = G(z_k) - dG gamma   (damping 1)

where the columns of dF, dG are the differences of consecutive f's and G's. Each row of the first
dimension (each latent of a batch) is mixed on its own, so a batch converges like its members would
alone. The small least-squares problems are solved in float64 with a Tikhonov term relative to their
scale, which keeps a nearly collinear window from producing huge coefficients.
"""

from __future__ import annotations

from collections import deque

import torch


class Anderson:
    """Stateful Anderson mixer: feed it (z_k, G(z_k)) each iteration, get z_{k+1} back."""

    def __init__(self, window: int, damping: float = 1.0, regularization: float = 1e-12) -> None:
        if window < 1:
            raise ValueError(f"Anderson window must be at least 1, got {window}")
        if not 0.0 < damping <= 1.0:
            raise ValueError(f"Anderson damping must be in (0, 1], got {damping}")
        self.window = window
        self.damping = damping
        self.regularization = regularization
        self._iterates: deque[torch.Tensor] = deque(maxlen=window + 1)
        self._images: deque[torch.Tensor] = deque(maxlen=window + 1)

    def reset(self) -> None:
        """Forget the history (e.g. after the map itself changed)."""
        self._iterates.clear()
        self._images.clear()

    def __len__(self) -> int:
        return len(self._iterates)

    def step(self, z: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The next iterate from the current one `z` and its image G(z) (same shape, first dim = batch)."""
        shape = z.shape
        self._iterates.append(z.detach().reshape(shape[0], -1).double())
        self._images.append(image.detach().reshape(shape[0], -1).double())
        if len(self._iterates) < 2:
            return image
        iterates = torch.stack(tuple(self._iterates), dim=-1)  # [B, n, k+1]
        images = torch.stack(tuple(self._images), dim=-1)
        residuals = images - iterates
        d_residuals = residuals[..., 1:] - residuals[..., :-1]  # [B, n, k]
        d_images = images[..., 1:] - images[..., :-1]
        gram = d_residuals.transpose(1, 2) @ d_residuals  # [B, k, k]
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-300)
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        gram = gram + (self.regularization * scale)[:, None, None] * eye
        rhs = d_residuals.transpose(1, 2) @ residuals[..., -1:]  # [B, k, 1]
        gamma = torch.linalg.solve(gram, rhs)
        mixed = images[..., -1:] - d_images @ gamma
        if self.damping < 1.0:
            d_iterates = iterates[..., 1:] - iterates[..., :-1]
            unmixed = iterates[..., -1:] - d_iterates @ gamma
            mixed = (1.0 - self.damping) * unmixed + self.damping * mixed
        return mixed.squeeze(-1).reshape(shape).to(image.dtype)
