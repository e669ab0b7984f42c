"""The numbers everyone reports the same way: NMSE of latents and noise, PSNR and SSIM of images.

Images are tensors in [-1, 1] of shape [B, 3, H, W] (or [3, H, W]); PSNR and SSIM come from
scikit-image on [0, 1] images, averaged over the batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def nmse(estimate: torch.Tensor, target: torch.Tensor) -> float:
    """||estimate - target||^2 / ||target||^2 over the whole tensor, in float64."""
    estimate = estimate.detach().double().cpu()
    target = target.detach().double().cpu()
    return float(((estimate - target) ** 2).sum() / (target**2).sum())


def to_db(value: float) -> float:
    """10 log10(value); -inf for 0."""
    return 10.0 * math.log10(value) if value > 0 else float("-inf")


def _unit_images(image: torch.Tensor) -> np.ndarray:
    """[-1, 1] tensor images -> float64 array [B, H, W, 3] in [0, 1]."""
    if image.ndim == 3:
        image = image[None]
    array = ((image.detach().double().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    return array


def psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean PSNR (dB) over the batch of images in [-1, 1]."""
    values = [
        peak_signal_noise_ratio(ref, img, data_range=1.0) for img, ref in zip(_unit_images(image), _unit_images(reference))
    ]
    return float(np.mean(values))


def ssim(image: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean SSIM over the batch of images in [-1, 1] (colour, Gaussian-free 7x7 windows)."""
    values = []
    for img, ref in zip(_unit_images(image), _unit_images(reference)):
        window = min(7, img.shape[0], img.shape[1])
        window -= 1 - window % 2
        values.append(structural_similarity(ref, img, data_range=1.0, channel_axis=-1, win_size=window))
    return float(np.mean(values))
