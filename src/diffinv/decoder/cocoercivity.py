"""Cocoercivity of the gradient-free decoder-inversion operator, and the step sizes it allows.

Hong et al. (NeurIPS 2024, "Gradient-free decoder inversion in latent diffusion models") invert the
decoder D by finding a zero of

    T(z) = E(D(z)) - E(x)

(E = encoder posterior mean, x = the image). Their convergence results assume T is beta-cocoercive,

    <T(z') - T(z), z' - z>  >=  beta * ||T(z') - T(z)||^2 ,

which they check empirically along the iterates (the smallest ratio seen over a run). Under it:

- the forward step z <- z - rho T(z) converges for 0 < rho < 2 beta;
- the inertial Krasnoselskii-Mann iteration y = z_k + alpha (z_k - z_{k-1}),
  z_{k+1} = y - 2 lambda beta T(y) (a KM iteration of the nonexpansive map I - 2 beta T, with inertia)
  converges for 0 <= alpha < 1 and 0 < lambda < `inertial_km_lambda_max(alpha)`, the bound of the
  inertial KM theorem of Bot, Csetnek and Hendrich (2015) with sigma -> 0 and the best delta.
  Both rules fit one statement: the effective step 2 lambda beta must be below
  2 * inertial_km_lambda_max(alpha) * beta (alpha = 0 gives the forward-step bound 2 beta).

This module holds that arithmetic and `check_cocoercivity`, which measures the ratio along real
iterates of an autoencoder and says whether a chosen step size is inside the guaranteed range.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from diffinv.models.autoencoder import Autoencoder

#: Pairs whose operator difference is below this fraction of the first one, or below NOISE_FACTOR
#: rounding units of E(x), are skipped: near the solution both differences are rounding noise
#: (float16 especially) and their ratio means nothing.
RELATIVE_FLOOR = 1e-2
NOISE_FACTOR = 10.0


def inertial_km_lambda_max(alpha: float) -> float:
    """Supremum of the relaxation lambda allowed by the inertial KM theorem for inertia `alpha` in [0, 1).

    Bot-Csetnek-Hendrich: with 0 <= alpha_k <= alpha < 1 non-decreasing, sigma, delta > 0,
    delta > (alpha^2 (1 + alpha) + alpha sigma) / (1 - alpha^2) and
    lambda_k <= (delta - alpha [alpha (1 + alpha) + alpha delta + sigma]) / (delta [1 + alpha (1 + alpha) + alpha delta + sigma]),
    the iterates converge. The bound falls with sigma, so its supremum is at sigma -> 0 and the delta that
    maximises it (closed form below). alpha = 0 gives 1, the plain KM range.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"inertia alpha must be in [0, 1), got {alpha}")
    if alpha == 0.0:
        return 1.0
    a = 1.0 - alpha**2
    b = alpha**2 * (1.0 + alpha)
    c = 1.0 + alpha + alpha**2
    d = alpha
    # maximise (a delta - b) / (c delta + d delta^2): a d delta^2 - 2 b d delta - b c = 0
    delta = (b * d + math.sqrt((b * d) ** 2 + a * b * c * d)) / (a * d)
    return (a * delta - b) / (c * delta + d * delta**2)


def max_step_size(beta: float, alpha: float = 0.0) -> float:
    """Largest step (rho, or 2 lambda beta for inertial KM) the theory allows for cocoercivity `beta`; 0 if beta <= 0."""
    if not beta > 0:
        return 0.0
    return 2.0 * inertial_km_lambda_max(alpha) * beta


def cocoercivity_ratios(
    operator_delta: torch.Tensor, latent_delta: torch.Tensor, floor: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Per-frame <dT, dz> / ||dT||^2 (float64) for differences of shape [B, ...]; NaN where ||dT|| <= floor (per frame)."""
    dt = operator_delta.detach().double().flatten(1)
    dz = latent_delta.detach().double().flatten(1)
    inner = (dt * dz).sum(dim=1)
    norm2 = (dt * dt).sum(dim=1)
    floor = torch.as_tensor(floor, dtype=torch.float64, device=norm2.device)
    keep = (norm2 > floor**2) & (norm2 > 0)
    return torch.where(keep, inner / norm2.clamp_min(1e-300), torch.full_like(norm2, float("nan")))


def operator_norms(operator_value: torch.Tensor) -> torch.Tensor:
    """Per-frame ||T|| (float64), the scale `RELATIVE_FLOOR` refers to."""
    return operator_value.detach().double().flatten(1).norm(dim=1)


def ratio_floor(first_difference: torch.Tensor, encoded_image: torch.Tensor) -> torch.Tensor:
    """Per-frame ||dT|| below which a cocoercivity ratio is noise: relative to the first difference and to E(x)'s rounding."""
    rounding = NOISE_FACTOR * torch.finfo(encoded_image.dtype).eps * operator_norms(encoded_image)
    return torch.maximum(RELATIVE_FLOOR * operator_norms(first_difference), rounding)


def residual_operator(
    autoencoder: Autoencoder,
    latent: torch.Tensor,
    encoded_image: torch.Tensor,
    fitted: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """T(z) = E(D(z)) - E(x), given E(x), or E(fitted(D(z))) - E(x); returns (T(z), D(z)) in the autoencoder's dtype.

    `fitted` maps the decoding to what the image file would hold (`ImageTarget.fitted`); None is the identity.
    """
    decoded = autoencoder.decode(latent.to(autoencoder.dtype))
    return autoencoder.encode(decoded if fitted is None else fitted(decoded)) - encoded_image, decoded


@dataclass
class CocoercivityCheck:
    """What `check_cocoercivity` measured and what it implies for the step size."""

    step_size: float
    alpha: float
    reference: str  # "ground-truth": pairs (z_k, z*); "consecutive": pairs (z_k, z_{k-1})
    iterations: int
    beta_min: float  # smallest ratio over all frames and iterates (the empirical beta)
    beta_median: float
    beta_min_per_frame: list[float]
    max_step_size: float  # 2 * lambda_max(alpha) * beta_min (0 if beta_min <= 0)
    holds: bool  # beta_min > 0 and step_size < max_step_size
    ratios: list[list[float]] = field(default_factory=list)  # [iterate][frame]; NaN where undefined

    def summary(self) -> str:
        """One line a person can read."""
        verdict = "holds" if self.holds else "does NOT hold"
        rule = "rho < 2 beta" if self.alpha == 0 else f"2 lambda beta < 2 * {inertial_km_lambda_max(self.alpha):.4f} * beta (alpha={self.alpha:g})"
        return (
            f"cocoercivity ({self.reference}, {self.iterations} iterates, {len(self.beta_min_per_frame)} frames): "
            f"beta_min={self.beta_min:.4g}, median={self.beta_median:.4g}; step {self.step_size:g} vs bound "
            f"{self.max_step_size:.4g} ({rule}): condition {verdict}"
        )


@torch.inference_mode()
def check_cocoercivity(
    autoencoder: Autoencoder,
    latents: torch.Tensor | None,
    step_size: float,
    *,
    images: torch.Tensor | None = None,
    iterations: int = 20,
    alpha: float = 0.0,
    chunk_size: int | None = None,
    progress: bool = False,
) -> CocoercivityCheck:
    """Estimate the cocoercivity of T along forward-step (alpha = 0) or inertial iterates, and check `step_size`.

    `latents` are ground-truth latents z* (the images default to D(z*)): the ratio is then taken
    between each iterate and z*, as in the paper. With only `images`, consecutive iterates are paired.
    The iteration runs from E(x) with y_k = z_k + alpha (z_k - z_{k-1}), z_{k+1} = y_k - step_size T(y_k);
    ratios are measured at the points y_k where T is evaluated.
    """
    if latents is None and images is None:
        raise ValueError("give ground-truth latents, images, or both")
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    if step_size <= 0:
        raise ValueError("step_size must be > 0")
    inertial_km_lambda_max(alpha)  # validates alpha
    device, dtype = autoencoder.device, autoencoder.dtype
    if images is None:
        images = torch.cat([autoencoder.decode(c.to(device, dtype)) for c in latents.split(chunk_size or len(latents))])
    frames = images.shape[0]
    if latents is not None and latents.shape[0] != frames:
        raise ValueError(f"{latents.shape[0]} latents for {frames} images")
    reference = "ground-truth" if latents is not None else "consecutive"
    size = chunk_size or frames
    per_iterate: list[torch.Tensor] = [torch.empty(0, dtype=torch.float64) for _ in range(iterations)]
    bar = tqdm(total=iterations * math.ceil(frames / size), desc="cocoercivity", disable=not progress, leave=False)
    for start in range(0, frames, size):
        x = images[start : start + size].to(device, dtype)
        target = autoencoder.encode(x)
        z = target.float()
        z_prev = z
        if latents is not None:
            z_star = latents[start : start + size].to(device).float()
            t_star, _ = residual_operator(autoencoder, z_star, target)
            t_star = t_star.float()
        previous: tuple[torch.Tensor, torch.Tensor] | None = None
        floor: torch.Tensor | None = None
        for k in range(iterations):
            y = z + alpha * (z - z_prev) if alpha else z
            t, _ = residual_operator(autoencoder, y, target)
            t = t.float()
            if floor is None:
                floor = ratio_floor(t - t_star if latents is not None else t, target)
            if latents is not None:
                ratio = cocoercivity_ratios(t - t_star, y - z_star, floor)
            elif previous is not None:
                ratio = cocoercivity_ratios(t - previous[1], y - previous[0], floor)
            else:
                ratio = torch.full((y.shape[0],), float("nan"), dtype=torch.float64)
            per_iterate[k] = torch.cat([per_iterate[k], ratio.cpu()])
            previous = (y, t)
            z_prev, z = z, y - step_size * t
            bar.update(1)
    bar.close()
    table = torch.stack(per_iterate)  # [iterations, frames]
    finite = table[torch.isfinite(table)]
    if finite.numel() == 0:
        raise RuntimeError("no defined cocoercivity ratio: T did not change along the iterates")
    per_frame = [float(col[torch.isfinite(col)].min()) if torch.isfinite(col).any() else float("nan") for col in table.T]
    beta_min = float(finite.min())
    bound = max_step_size(beta_min, alpha)
    return CocoercivityCheck(
        step_size=float(step_size),
        alpha=float(alpha),
        reference=reference,
        iterations=iterations,
        beta_min=beta_min,
        beta_median=float(finite.median()),
        beta_min_per_frame=per_frame,
        max_step_size=bound,
        holds=bool(beta_min > 0 and step_size < bound),
        ratios=table.tolist(),
    )
