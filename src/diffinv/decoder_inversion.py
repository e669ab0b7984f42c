"""Inversion of the decoder: find z_0 with D(z_0) = x.

Stub: only the encoder baseline, z_0 = E(x). The iterative methods come with issue 5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from diffinv.autoencoder import Autoencoder
from diffinv.measure import measure

DECODER_METHODS = ("encoder",)


@dataclass
class DecoderInversion:
    """Recovered latent z_0 and what finding it cost."""

    latent: torch.Tensor
    method: str
    iterations: int = 0
    seconds: float = 0.0
    peak_memory_bytes: int = 0
    residuals: list[float] = field(default_factory=list)
    converged: bool = True


@torch.inference_mode()
def invert_decoder(autoencoder: Autoencoder, image: torch.Tensor, method: str = "encoder", **options) -> DecoderInversion:
    """Recover z_0 from images [B, 3, H, W] in [-1, 1] with the named method."""
    if method not in DECODER_METHODS:
        raise ValueError(f"unknown decoder method {method!r}; choose one of {', '.join(DECODER_METHODS)}")
    with measure(autoencoder.device) as cost:
        latent = autoencoder.encode(image)
    return DecoderInversion(latent=latent, method=method, seconds=cost.seconds, peak_memory_bytes=cost.peak_memory_bytes)
