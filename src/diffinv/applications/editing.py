"""Real-image editing by inversion: invert with the source prompt, regenerate along two branches that share
the recovered noise, the source branch (a reconstruction) and the edited branch (the target prompt).

Modes, both on the one sampler loop (`diffinv.sampler.sampling.sample`):

- ``"prompt-to-prompt"`` (Hertz et al. 2022, word swap): the edited branch takes the source branch's
  cross-attention maps for the first `cross_fraction` of the steps (0.8, the paper's word-swap
  setting) and its self-attention maps for the first `self_fraction` (0.4), see
  `diffinv.applications.attention`. Nothing is pasted, so what stays of the background is what the
  inversion reconstructs (the comparison of Hong et al., CVPR 2024). With `local_blend` (a threshold,
  0.3 in the paper's `LocalBlend`; off by default) the edited branch takes the source branch's latent
  after every step outside the region where either branch attends to the swapped words.
- ``"diffedit"`` (Couairon et al. 2023): a mask, given or estimated from the difference of the noise
  predictions under the two prompts (`estimate_mask`), and after every step the edited branch's latent
  outside the mask replaced by the source branch's latent at that step.

The mask is always reported (`mask`, latent resolution; `image_mask`, image resolution): in
prompt-to-prompt it is only used to score the background, or it is local blending's attention mask
(`mask_source` "attention") when blending and no mask is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from diffinv.applications.attention import AttentionInjection, changed_tokens, injected, token_alignment
from diffinv.inversion import InversionResult
from diffinv.models.denoiser import Denoiser, network_of
from diffinv.models.prediction import NoiseLevel
from diffinv.pipeline import decode, image_batch, invert
from diffinv.sampler.sampling import sample
from diffinv.sampler.schedule import make_schedule
from diffinv.utils.config import Config, Registry, bounded
from diffinv.utils.images import tensor_to_pil
from diffinv.utils.measure import largest, measure
from diffinv.utils.metrics import psnr, ssim



@dataclass(frozen=True, kw_only=True)
class PromptToPrompt(Config):
    """Prompt-to-prompt word swap (Hertz et al. 2022): the edited branch takes the source branch's attention
    maps for the first part of the steps. Defaults: the paper's word-swap notebook."""

    name = "prompt-to-prompt"
    kind = "editing mode"
    cross_fraction: float = bounded(0.8, min=0.0, max=1.0, help="share of the steps with injected cross-attention maps")
    self_fraction: float = bounded(0.4, min=0.0, max=1.0, help="share of the steps with injected self-attention maps")
    local_blend: float | None = bounded(None, above=0.0, below=1.0,
                                        help="local blending's attention threshold (0.3 in the paper); None: off")


@dataclass(frozen=True, kw_only=True)
class DiffEdit(Config):
    """DiffEdit (Couairon et al. 2023): a mask from the difference of the noise predictions under the two
    prompts, and the source branch's latent kept outside it. Defaults: diffusers' implementation."""

    name = "diffedit"
    kind = "editing mode"
    strength: float = bounded(0.5, min=0.0, max=1.0, help="noise level the mask is estimated at (share of the schedule)")
    draws: int = bounded(10, min=1, help="noise draws averaged for the mask")
    clamp_ratio: float = bounded(3.0, above=0.0, help="the difference is clamped at this multiple of its mean")
    threshold: float = bounded(0.5, min=0.0, max=1.0, help="mask threshold on the clamped, rescaled difference")
    mask_seed: int = bounded(0, help="seed of the noise draws")


#: The editing modes by name.
EDIT_MODES: Registry[Config] = Registry("editing mode", [PromptToPrompt, DiffEdit])
MODES = tuple(EDIT_MODES.names())


@dataclass
class EditResult:
    """The edited images, the reconstruction (source branch), the mask, the inversion and the cost."""

    edited: torch.Tensor  # [B, 3, H, W] in [-1, 1]
    reconstruction: torch.Tensor
    edited_latent: torch.Tensor  # [B, C, h, w], the edited branch's z_0
    reconstruction_latent: torch.Tensor  # the source branch's z_0
    mask: torch.Tensor  # [B, 1, h, w] in {0, 1}, latent resolution (1 = edit region)
    image_mask: torch.Tensor  # [B, 1, H, W] in {0, 1}
    inversion: InversionResult
    mode: str
    mask_source: str  # "given" or "estimated"
    options: dict[str, Any]
    nfe: int
    seconds: float
    peak_memory_bytes: int | None
    injected_maps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def edited_images(self) -> list[Image.Image]:
        return tensor_to_pil(self.edited)

    @property
    def reconstruction_images(self) -> list[Image.Image]:
        return tensor_to_pil(self.reconstruction)

    @property
    def report(self) -> dict[str, Any]:
        inversion = self.inversion
        return {
            "mode": self.mode, "method": inversion.method, "decoder": inversion.decoder, "sampler": inversion.sampler,
            "steps": inversion.steps, "guidance": inversion.guidance, "mask_source": self.mask_source,
            "options": self.options, "nfe": self.nfe, "inversion_nfe": inversion.nfe, "seconds": round(self.seconds, 4),
            "inversion_seconds": round(inversion.seconds, 4), "peak_memory_bytes": self.peak_memory_bytes,
            "inversion_converged": inversion.converged, "edit_fraction": float(self.mask.float().mean()),
            **self.metrics,
        }


def check_mode(mode: str) -> str:
    """Return `mode` if it names an editing mode, else raise a ValueError listing them."""
    return EDIT_MODES.check_name(mode)


def _prompt_list(prompt: str | Sequence[str], count: int, name: str) -> list[str]:
    prompts = [prompt] * count if isinstance(prompt, str) else list(prompt)
    if len(prompts) != count:
        raise ValueError(f"got {len(prompts)} {name}s for {count} images")
    if name == "target prompt" and any(not p.strip() for p in prompts):
        raise ValueError("the target prompt is empty: say what the edited image should show")
    return prompts


def prepare_mask(mask: torch.Tensor, count: int, size: tuple[int, int]) -> torch.Tensor:
    """A user mask ([H, W], [1, H, W] or [B or 1, 1, H, W], values in [0, 1], any size) as {0, 1} at `size`."""
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"the mask must be a tensor in [0, 1], got {type(mask).__name__}")
    mask = mask.detach().float().cpu()
    mask = mask.reshape(-1, 1, *mask.shape[-2:]) if mask.ndim in (2, 3, 4) else None
    if mask is None or mask.shape[0] not in (1, count):
        raise ValueError(f"the mask must be [H, W], [1, H, W] or [B, 1, H, W] for {count} image(s)")
    if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise ValueError("the mask must hold finite values in [0, 1] (1 = the region to edit)")
    resized = F.interpolate(mask, size=size, mode="area") if tuple(mask.shape[-2:]) != tuple(size) else mask
    binary = (resized >= 0.5).float().expand(count, -1, -1, -1).contiguous()
    if not binary.flatten(1).any(1).all():
        raise ValueError(f"the mask selects nothing at {size[1]}x{size[0]}: make its region larger")
    return binary


@torch.inference_mode()
def estimate_mask(pipe, latent: torch.Tensor, source_prompts: list[str], target_prompts: list[str], guidance: float,
                  config: DiffEdit | None = None) -> torch.Tensor:
    """DiffEdit's mask: |eps(z_t, target) - eps(z_t, source)| over `draws` noisings of z_0 at `strength`,
    averaged over channels and draws, clamped at `clamp_ratio` x its mean, scaled to [0, 1], thresholded."""
    config = config or DiffEdit()
    strength, draws, clamp_ratio, threshold = config.strength, config.draws, config.clamp_ratio, config.threshold
    mask_seed = config.mask_seed
    count = latent.shape[0]
    denoiser = Denoiser.from_pipeline(pipe, source_prompts + target_prompts, 2 * count, guidance,
                                      pipe.scheduler.config.prediction_type)
    timestep = min(int(strength * pipe.scheduler.config.num_train_timesteps), pipe.scheduler.config.num_train_timesteps - 1)
    alpha_bar = float(pipe.scheduler.alphas_cumprod[timestep])
    point = NoiseLevel(alpha=alpha_bar**0.5, sigma=(1 - alpha_bar) ** 0.5)
    generator = torch.Generator().manual_seed(mask_seed)
    total = torch.zeros(count, 1, *latent.shape[-2:])
    for _ in range(draws):
        noise = torch.randn(latent.shape, generator=generator).to(latent.device)
        noisy = (point.alpha * latent + point.sigma * noise).repeat(2, 1, 1, 1)
        eps = denoiser.predict(noisy, timestep, point).noise.float().cpu()
        total += (eps[count:] - eps[:count]).abs().mean(dim=1, keepdim=True)
    difference = total / draws
    limit = difference.flatten(1).mean(1).view(-1, 1, 1, 1) * clamp_ratio
    difference = torch.minimum(difference, limit)
    difference = difference / difference.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (difference >= threshold).float()


def edit(
    pipe,
    image: torch.Tensor | Image.Image | Sequence[Image.Image],
    source_prompt: str | Sequence[str],
    target_prompt: str | Sequence[str],
    *,
    method: str = "exact",
    decoder: str = "encoder",
    mode: str | PromptToPrompt | DiffEdit = "prompt-to-prompt",
    mask: torch.Tensor | None = None,
    sampler: str = "ddim",
    steps: int = 50,
    guidance: float = 7.5,
    method_options: dict[str, Any] | None = None,
    decoder_options: dict[str, Any] | None = None,
    mode_options: dict[str, Any] | None = None,
    inversion: InversionResult | None = None,
    progress: bool = False,
) -> EditResult:
    """Edit `image` ([B, 3, H, W] in [-1, 1] or PIL image(s)) from `source_prompt` to `target_prompt`.

    Inverts with any sampler-inversion `method` and `decoder` inversion (the source prompt, `guidance`),
    then samples the source and edited branches from the recovered noise in one batch. `mask` (1 = the
    region to edit, any size) replaces DiffEdit's estimated mask; in prompt-to-prompt it only scores.
    `inversion`, the result of an earlier edit or `diffinv.invert` of the same image with the same
    settings, skips inverting again (several targets or modes from one inversion); the result's NFE and
    seconds still include it.
    """
    if getattr(pipe, "unet", None) is None:
        raise ValueError("editing needs a UNet pipeline (SD 1.x/2.x, SDXL); the joint attention of SD3 and Flux is not supported yet")
    config = EDIT_MODES.resolve(mode, mode_options)
    mode = config.name
    images = image_batch(image)
    count = images.shape[0]
    sources = _prompt_list(source_prompt, count, "source prompt")
    targets = _prompt_list(target_prompt, count, "target prompt")
    schedule = make_schedule(sampler, pipe.scheduler.config, steps)
    latent_size = (images.shape[-2] // pipe.vae_scale_factor, images.shape[-1] // pipe.vae_scale_factor)
    given = prepare_mask(mask, count, latent_size) if mask is not None else None
    blending = isinstance(config, PromptToPrompt) and config.local_blend is not None
    if isinstance(config, PromptToPrompt):
        alignments, words = _alignments(pipe, sources, targets)
    reused = inversion is not None
    if reused and (inversion.noise.shape[0] != count or inversion.sampler != sampler or inversion.steps != steps):
        raise ValueError("the given inversion does not match these images and sampler settings")
    if reused and float(inversion.guidance) != float(guidance):
        raise ValueError(f"the given inversion was made at guidance {inversion.guidance}, not {guidance}: "
                         "its noise regenerates the image only at its own guidance")
    if reused and inversion.prompts is not None and inversion.prompts != list(sources):
        made, asked = next((a, b) for a, b in zip(inversion.prompts, sources) if a != b)
        raise ValueError(f"the given inversion was made with the prompt {made!r}, not the source prompt {asked!r}: "
                         "its noise regenerates the image only with its own prompt")
    with measure(network_of(pipe).device) as cost:
        if not reused:
            inversion = invert(pipe, images, prompt=sources, sampler=sampler, steps=steps, guidance=guidance,
                               method=method, decoder=decoder, method_options=method_options,
                               decoder_options=decoder_options, progress=progress)
        nfe = inversion.nfe
        if given is not None:
            latent_mask, mask_source = given.to(inversion.latent.device), "given"
        elif blending:
            latent_mask, mask_source = None, "attention"
        else:
            masking = config if isinstance(config, DiffEdit) else DiffEdit()  # P2P scores with DiffEdit's estimate
            latent_mask = estimate_mask(pipe, inversion.latent.float(), sources, targets, guidance, masking)
            latent_mask, mask_source = latent_mask.to(inversion.latent.device), "estimated"
            nfe += masking.draws
        denoiser = Denoiser.from_pipeline(pipe, sources + targets, 2 * count, guidance, schedule.prediction_type)
        noise = inversion.noise.float().repeat(2, 1, 1, 1)
        injected_maps = 0
        if isinstance(config, PromptToPrompt):
            cross = set(schedule.timesteps[: round(config.cross_fraction * len(schedule))])
            self_ = set(schedule.timesteps[: round(config.self_fraction * len(schedule))])
            controller = AttentionInjection(alignments, denoiser.guided, cross, self_,
                                            blend_words=torch.cat([words[:, 0], words[:, 1]]) if blending else None)

            blend_masks: list[torch.Tensor] = []  # each step's local-blending region; the last is reported

            def blend_locally(index: int, x: torch.Tensor) -> torch.Tensor:
                blend_masks.append(controller.blend_mask(latent_size, config.local_blend).to(x.device))
                return _keep_source(x, blend_masks[-1])

            with injected(pipe.unet, controller):
                latents = sample(denoiser, schedule, noise, progress=progress,
                                 after_step=blend_locally if blending else None).final
            injected_maps = controller.injected
            if latent_mask is None:
                latent_mask = blend_masks[-1]
        else:
            latents = sample(denoiser, schedule, noise, progress=progress,
                             after_step=lambda index, x: _keep_source(x, latent_mask)).final
        decoded = decode(pipe, latents)
        nfe += denoiser.nfe
    image_mask = F.interpolate(latent_mask.float().cpu(), size=images.shape[-2:], mode="nearest")
    result = EditResult(
        edited=decoded[count:].cpu(), reconstruction=decoded[:count].cpu(), edited_latent=latents[count:].cpu(),
        reconstruction_latent=latents[:count].cpu(), mask=latent_mask.cpu(), image_mask=image_mask,
        inversion=inversion, mode=mode, mask_source=mask_source, options=config.as_dict(), nfe=nfe,
        seconds=cost.seconds + (inversion.seconds if reused else 0.0),
        peak_memory_bytes=largest(cost.peak_memory_bytes, inversion.peak_memory_bytes), injected_maps=injected_maps,
    )
    result.metrics = edit_scores(result, images.float().cpu(), background=1 - image_mask if mask_source == "given" else None)
    return result


def _keep_source(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Latents [source rows; edited rows] with each edited row outside `mask` (1 = edit) taken from its source row."""
    count = x.shape[0] // 2
    x = x.clone()
    x[count:] = mask * x[count:] + (1 - mask) * x[:count]
    return x


def edit_scores(result: EditResult, image: torch.Tensor, background: torch.Tensor | None = None) -> dict[str, float]:
    """Reconstruction PSNR/SSIM against the input; with a `background` region (1 = keep), the edited image's
    PSNR/SSIM against the input there (how much of what should stay did stay), averaged over the images
    that have any background left (`background_images` counts them; an edit that covers an image whole has none)."""
    scores = {"reconstruction_psnr": psnr(result.reconstruction, image), "reconstruction_ssim": ssim(result.reconstruction, image)}
    if background is not None:
        has = background.flatten(1).any(1).cpu()
        if bool(has.any()):
            edited, reference, region = result.edited.cpu()[has], image.cpu()[has], background.cpu()[has]
            scores["background_psnr"] = psnr(edited, reference, where=region)
            scores["background_ssim"] = ssim(edited, reference, where=region)
        scores["background_images"] = int(has.sum())
    return scores


def _alignments(pipe, sources: list[str], targets: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token alignment [B, tokens] of each (source, target) pair for prompt-to-prompt, and its changed
    words [B, 2, tokens] (source's, target's) for local blending."""
    tokenizer = pipe.tokenizer
    alignments, words = [], []
    for source, target in zip(sources, targets):
        ids = tokenizer([source, target], truncation=True, max_length=tokenizer.model_max_length).input_ids
        alignments.append(token_alignment(ids[0], ids[1], tokenizer.model_max_length))
        words.append(changed_tokens(ids[0], ids[1], tokenizer.model_max_length))
    return torch.stack(alignments), torch.stack(words)
