"""End to end: prompt + noise -> image, and image -> z_0 -> z_T, on a diffusers pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from diffinv.decoder import DECODERS, DecoderMethod, invert_decoder
from diffinv.inversion import METHODS, InversionResult, Method, invert_sampler
from diffinv.models.autoencoder import Autoencoder
from diffinv.models.denoiser import Denoiser, default_latent_side, is_flux, latent_channels, network_of
from diffinv.sampler.sampling import sample
from diffinv.sampler.schedule import Schedule, check_sampler_name, make_schedule, resolve_sampler
from diffinv.utils.images import pil_to_tensor, tensor_to_pil
from diffinv.utils.measure import largest, measure
from diffinv.utils.metrics import nmse, psnr, ssim
from diffinv.utils.specs import SEED_RANGE
from diffinv.utils.status import OnDivergence, Status


@dataclass
class Generation:
    """Images sampled from known noise: the noise, the final latent, the decoded images, the cost."""

    noise: torch.Tensor
    latent: torch.Tensor
    image: torch.Tensor
    sampler: str
    steps: int
    guidance: float
    nfe: int
    seconds: float
    peak_memory_bytes: int | None
    prompt: list[str] = field(default_factory=list)
    seed: int | None = None

    @property
    def images(self) -> list[Image.Image]:
        return tensor_to_pil(self.image)

    @property
    def report(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "seed": self.seed,
            "sampler": self.sampler,
            "steps": self.steps,
            "guidance": self.guidance,
            "nfe": self.nfe,
            "seconds": round(self.seconds, 4),
            "peak_memory_bytes": self.peak_memory_bytes,
        }


def latent_shape(pipe, batch_size: int, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
    """[B, C, h, w] of the latents for images of height x width (default: the pipeline's own size)."""
    factor = pipe.vae_scale_factor
    default = default_image_side(pipe)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"the number of images must be at least 1, got {batch_size}")
    height = default if height is None else height
    width = default if width is None else width
    for name, side in (("height", height), ("width", width)):
        if isinstance(side, bool) or not isinstance(side, int) or side < 1:
            raise ValueError(f"image {name} must be a positive whole number of pixels, got {side}")
    multiple = factor * (2 if is_flux(pipe) else 1)  # Flux packs 2x2 latent patches
    if height % multiple or width % multiple:
        raise ValueError(f"image size {width}x{height} is not a multiple of {multiple} (the VAE factor"
                         f"{' times Flux packing' if multiple != factor else ''})")
    return (batch_size, latent_channels(pipe), height // factor, width // factor)


def default_image_side(pipe) -> int:
    """The image height (= width) in pixels the pipeline makes by default."""
    return default_latent_side(pipe) * pipe.vae_scale_factor


def pipeline_schedule(pipe, sampler: str | None, steps: int, latent_size: tuple[int, int] | None = None) -> Schedule:
    """The schedule of sampler `sampler` (None: the model's default, flow-euler on flow-matching models) for
    latents of `latent_size` (h, w; default the pipeline's own): the image's token count is what a flow
    sampler with dynamic shifting needs."""
    config = network_of(pipe).config
    height, width = latent_size or (default_latent_side(pipe),) * 2
    if is_flux(pipe):  # tokens are 2x2 patches; FluxPipeline passes its own sigmas, 1 down to 1/steps
        sigmas = np.linspace(1.0, 1.0 / steps, steps).tolist()
        return make_schedule(sampler, pipe.scheduler.config, steps, image_seq_len=(height // 2) * (width // 2), sigmas=sigmas)
    patch = getattr(config, "patch_size", None) or 1
    return make_schedule(sampler, pipe.scheduler.config, steps, image_seq_len=(height // patch) * (width // patch))


def check_seed(seed: int) -> int:
    """`seed` if torch's generator takes it (a whole number in `SEED_RANGE`), else a ValueError naming it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ValueError(f"seed {seed!r} is out of range: give a whole number from -2**63 to 2**64 - 1")
    return seed


def seeded_noise(pipe, seed: int, batch_size: int = 1, height: int | None = None, width: int | None = None) -> torch.Tensor:
    """The float32 noise diffusers draws for `generator=torch.Generator().manual_seed(seed)`."""
    shape = latent_shape(pipe, batch_size, height, width)
    generator = torch.Generator().manual_seed(check_seed(seed))
    return randn_tensor(shape, generator=generator, device=network_of(pipe).device, dtype=torch.float32)


def check_latent(pipe, latent: torch.Tensor, name: str = "latent") -> torch.Tensor:
    """Refuse in one line a latent (or noise) the pipeline cannot take: not [B, C, h, w] with the model's C,
    a side the VAE factor (or Flux's packing) cannot produce, or non-finite values."""
    channels = latent_channels(pipe)
    if not isinstance(latent, torch.Tensor) or latent.ndim != 4 or latent.shape[1] != channels or 0 in latent.shape:
        given = list(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
        raise ValueError(f"the {name} must be a tensor [batch, {channels}, h, w] for this model, got {given}")
    if is_flux(pipe) and (latent.shape[-1] % 2 or latent.shape[-2] % 2):
        raise ValueError(f"the {name}'s sides must be even for Flux (2x2 packing), got {list(latent.shape)}")
    if not torch.isfinite(latent).all():
        raise ValueError(f"the {name} holds non-finite values (NaN or infinity)")
    return latent


def _prompts(prompt: str | Sequence[str], batch_size: int) -> list[str]:
    return [prompt] * batch_size if isinstance(prompt, str) else list(prompt)


@torch.inference_mode()
def decode(pipe, latent: torch.Tensor) -> torch.Tensor:
    """D(z_0) as float32 images in [-1, 1]."""
    return Autoencoder.from_pipeline(pipe).decode(latent).float().clamp(-1, 1)


def generate(
    pipe,
    prompt: str | Sequence[str],
    *,
    noise: torch.Tensor | None = None,
    seed: int | None = None,
    sampler: str | None = None,
    steps: int = 50,
    guidance: float = 7.5,
    negative_prompt: str | Sequence[str] | None = None,
    batch_size: int = 1,
    height: int | None = None,
    width: int | None = None,
    progress: bool = False,
) -> Generation:
    """Sample images from `noise` (or the noise of `seed`) with the named sampler (None: the model's default)
    and guidance."""
    check_sampler_name(sampler)
    if noise is None:
        noise = seeded_noise(pipe, 0 if seed is None else seed, batch_size, height, width)
    check_latent(pipe, noise, "noise")
    noise = noise.to(network_of(pipe).device, torch.float32)
    schedule = pipeline_schedule(pipe, sampler, steps, tuple(noise.shape[-2:]))
    prompts = _prompts(prompt, noise.shape[0])
    size = (noise.shape[-2] * pipe.vae_scale_factor, noise.shape[-1] * pipe.vae_scale_factor)
    denoiser = Denoiser.from_pipeline(pipe, prompts, noise.shape[0], guidance, schedule.prediction_type, negative_prompt, size)
    with measure(noise.device) as cost:
        latent = sample(denoiser, schedule, noise, progress=progress).final
        image = decode(pipe, latent)
    return Generation(
        noise=noise, latent=latent, image=image, sampler=schedule.name, steps=steps, guidance=float(guidance),
        nfe=denoiser.nfe, seconds=cost.seconds, peak_memory_bytes=cost.peak_memory_bytes, prompt=prompts, seed=seed,
    )


def image_batch(image: torch.Tensor | Image.Image | Sequence[Image.Image]) -> torch.Tensor:
    """Images as one [B, 3, H, W] tensor in [-1, 1]: a tensor ([3, H, W] or batched), a PIL image or a list of them."""
    if isinstance(image, Image.Image):
        return pil_to_tensor(image)[None]
    if isinstance(image, torch.Tensor):
        return image[None] if image.ndim == 3 else image
    return torch.stack([pil_to_tensor(frame) for frame in image])


def invert(
    pipe,
    image: torch.Tensor | Image.Image | Sequence[Image.Image] | None = None,
    *,
    prompt: str | Sequence[str] = "",
    latent: torch.Tensor | None = None,
    sampler: str | None = None,
    steps: int = 50,
    guidance: float = 1.0,
    method: str | Method = "naive",
    decoder: str | DecoderMethod = "encoder",
    negative_prompt: str | Sequence[str] | None = None,
    method_options: dict[str, Any] | None = None,
    decoder_options: dict[str, Any] | None = None,
    keep_trajectory: bool = False,
    progress: bool = False,
    on_divergence: OnDivergence = "raise",
) -> InversionResult:
    """Recover z_0 (from `image` through the decoder inversion, or the given `latent`) and then z_T.

    `image` is a [B, 3, H, W] tensor in [-1, 1] or PIL image(s); exactly one of `image` and `latent`;
    `sampler` None is the model's default sampler. `on_divergence` is one switch for both stages: "raise"
    (`DecoderInversionDiverged`, `InversionDiverged`) or "report" (a warning, and the result's status says
    diverged).
    """
    resolve_sampler(sampler, pipe.scheduler.config)  # an unknown sampler, or one the model cannot use
    method = METHODS.resolve(method, method_options)  # every option checked before any work
    decoder_options = dict(decoder_options or {})
    decoder_progress = bool(decoder_options.pop("progress", progress))  # progress=False hides the stage's bar
    decoder = DECODERS.resolve(decoder, decoder_options)
    if (image is None) == (latent is None):
        raise ValueError("give exactly one of image and latent")
    device = network_of(pipe).device
    decoded = None
    with measure(device) as total:
        if image is not None:
            images = image_batch(image).to(device)
            factor = pipe.vae_scale_factor
            if images.shape[-1] % factor or images.shape[-2] % factor:
                raise ValueError(f"image size {images.shape[-1]}x{images.shape[-2]} is not a multiple of the VAE factor {factor}")
            decoded = invert_decoder(Autoencoder.from_pipeline(pipe), images, method=decoder, progress=decoder_progress,
                                     on_divergence=on_divergence)
            latent = decoded.latent.float()
        latent = check_latent(pipe, latent).to(device, torch.float32)
        schedule = pipeline_schedule(pipe, sampler, steps, tuple(latent.shape[-2:]))
        prompts = _prompts(prompt, latent.shape[0])
        size = (latent.shape[-2] * pipe.vae_scale_factor, latent.shape[-1] * pipe.vae_scale_factor)
        denoiser = Denoiser.from_pipeline(pipe, prompts, latent.shape[0], guidance, schedule.prediction_type, negative_prompt,
                                          size)
        result = invert_sampler(
            denoiser, schedule, latent, method, keep_trajectory=keep_trajectory, progress=progress,
            on_divergence=on_divergence,
        )
    result.prompts = list(prompts)
    result.seconds = total.seconds
    # The stages measure themselves (each resets the peak), so the total is the largest stage peak.
    stage_peaks = [result.peak_memory_bytes] + ([decoded.peak_memory_bytes] if decoded is not None else [])
    result.peak_memory_bytes = largest(total.peak_memory_bytes, *stage_peaks)
    if decoded is not None:
        result.decoder = decoder.name
        result.decoder_seconds = decoded.seconds
        result.decoder_peak_memory_bytes = decoded.peak_memory_bytes
        result.decoder_iterations = decoded.iterations
        result.clipped_fraction = decoded.clipped_fraction
        result.converged = result.converged and decoded.converged
        result.decoder_result = decoded
        result.status = Status.worst(result.status, decoded.status)
    return result


def reconstruct(
    pipe,
    result: InversionResult,
    prompt: str | Sequence[str] = "",
    negative_prompt: str | Sequence[str] | None = None,
) -> Generation:
    """Regenerate from the recovered noise with the inversion's sampler, steps and guidance."""
    return generate(
        pipe, prompt, noise=result.noise, sampler=result.sampler, steps=result.steps, guidance=result.guidance,
        negative_prompt=negative_prompt,
    )


def score(
    result: InversionResult,
    reconstruction: Generation | None = None,
    image: torch.Tensor | None = None,
    true_noise: torch.Tensor | None = None,
    true_latent: torch.Tensor | None = None,
) -> dict[str, float]:
    """The standard metrics that the given references allow; also stored in `result.metrics`."""
    metrics: dict[str, float] = {}
    if true_noise is not None:
        metrics["noise_nmse"] = nmse(result.noise, true_noise)
    if true_latent is not None:
        metrics["latent_nmse"] = nmse(result.latent, true_latent)
    if reconstruction is not None and image is not None:
        metrics["psnr"] = psnr(reconstruction.image, image)
        metrics["ssim"] = ssim(reconstruction.image, image)
    result.metrics.update(metrics)
    return metrics
