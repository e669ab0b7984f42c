"""The numbers everyone reports the same way: NMSE of latents and noise, PSNR and SSIM of images.

Images are tensors in [-1, 1] of shape [B, 3, H, W] (or [3, H, W]); PSNR and SSIM come from
scikit-image on [0, 1] images, averaged over the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import mannwhitneyu
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


def _regions(where: torch.Tensor | None, count: int) -> list[np.ndarray | None]:
    """Per-image boolean pixel masks [H, W] from `where` ([B or 1, 1, H, W] or [H, W], nonzero = counted)."""
    if where is None:
        return [None] * count
    where = where.detach().cpu().bool()
    where = where.reshape(-1, *where.shape[-2:])
    if where.shape[0] == 1:
        where = where.expand(count, -1, -1)
    if not where.flatten(1).any(1).all():
        raise ValueError("the region to score is empty in at least one image")
    return list(where.numpy())


def psnr(image: torch.Tensor, reference: torch.Tensor, where: torch.Tensor | None = None) -> float:
    """Mean PSNR (dB) over the batch of images in [-1, 1]; with `where`, only over those pixels."""
    values = []
    for img, ref, region in zip(_unit_images(image), _unit_images(reference), _regions(where, len(image))):
        if region is None:
            values.append(peak_signal_noise_ratio(ref, img, data_range=1.0))
        else:
            mse = float(((img - ref)[region] ** 2).mean())
            values.append(10 * math.log10(1.0 / mse) if mse > 0 else float("inf"))
    return float(np.mean(values))


def ssim(image: torch.Tensor, reference: torch.Tensor, where: torch.Tensor | None = None) -> float:
    """Mean SSIM over the batch of images in [-1, 1] (colour, Gaussian-free 7x7 windows); with `where`,
    the SSIM map averaged over those pixels only."""
    values = []
    for img, ref, region in zip(_unit_images(image), _unit_images(reference), _regions(where, len(image))):
        window = min(7, img.shape[0], img.shape[1])
        window -= 1 - window % 2
        score, full = structural_similarity(ref, img, data_range=1.0, channel_axis=-1, win_size=window, full=True)
        values.append(score if region is None else float(full.mean(axis=-1)[region].mean()))
    return float(np.mean(values))


def auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Area under the ROC curve for scores where higher means 'watermarked' (Mann-Whitney U / n1 n2)."""
    return float(mannwhitneyu(positive, negative).statistic / (len(positive) * len(negative)))


def tpr_at_fpr(positive_distance: Sequence[float], negative_distance: Sequence[float], fpr: float = 0.01) -> float:
    """True-positive rate when the distance threshold lets at most `fpr` of the clean images through."""
    negatives = np.sort(np.asarray(negative_distance))
    threshold = negatives[int(np.floor(fpr * len(negatives)))]
    return float(np.mean(np.asarray(positive_distance) < threshold))
