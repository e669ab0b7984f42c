"""diffinv: find the noise and the latent behind an image for latent diffusion models."""
