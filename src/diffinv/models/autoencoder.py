"""The pipeline's VAE seen as a map between images in [-1, 1] and scaled latents z_0.

`encode` returns the scaled posterior mean (not a sample), `decode` takes a scaled latent: the same
convention as `StableDiffusionPipeline`, so `decode(pipe(..., output_type="latent").images)` is the
pipeline's own image before post-processing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL


@dataclass
class Autoencoder:
    """Encoder E and decoder D of a latent diffusion model, with the pipeline's scaling factor."""

    vae: AutoencoderKL

    @classmethod
    def from_pipeline(cls, pipe) -> "Autoencoder":
        return cls(pipe.vae)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    @property
    def factor(self) -> int:
        """How many image pixels one latent pixel stands for, along each side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    @property
    def device(self) -> torch.device:
        return self.vae.device

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """E(x): images [B, 3, H, W] in [-1, 1] -> scaled latent means [B, C, H/f, W/f]."""
        mean = self.vae.encode(image.to(self.device, self.dtype)).latent_dist.mean
        return (mean - self.shift_factor) * self.scaling_factor

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """D(z): scaled latents -> images in (roughly) [-1, 1]."""
        latent = latent.to(self.device, self.dtype) / self.scaling_factor + self.shift_factor
        return self.vae.decode(latent).sample
