"""The network as the samplers see it: eps(z, t, cond) with classifier-free guidance folded in.

`Denoiser` wraps a pipeline's network (the UNet of SD 1.x/2.x and SDXL, the MMDiT transformer of SD3)
and the prompt's text embeddings (made by the pipeline's own `encode_prompt`), batches the
unconditional and conditional branches into one call exactly like the diffusers pipelines, and counts
network evaluations (NFE: one per batched call).
"""

from __future__ import annotations

import copy
import math
import warnings

import torch

from diffinv.models.device import check_finite
from diffinv.models.prediction import NoiseLevel, Prediction, predict


def network_of(pipe):
    """The pipeline's denoising network: its transformer (SD3) or its UNet."""
    transformer = getattr(pipe, "transformer", None)
    return transformer if transformer is not None else pipe.unet


def is_flux(pipe) -> bool:
    """Whether the pipeline's network is a Flux transformer (packed 2x2 latents, embedded guidance)."""
    return type(getattr(pipe, "transformer", None)).__name__ == "FluxTransformer2DModel"


def default_latent_side(pipe) -> int:
    """The latent height (= width) the pipeline samples by default: its `default_sample_size`, or for Flux
    (whose pipeline fixes 128) the VAE's own image size over its factor, which is 128 for FLUX.1 too."""
    if is_flux(pipe):
        return int(pipe.vae.config.sample_size) // pipe.vae_scale_factor
    return int(getattr(pipe, "default_sample_size", None) or network_of(pipe).config.sample_size)


def latent_channels(pipe) -> int:
    """Channels of the (unpacked) latents: the network's input channels, over 4 for Flux's 2x2 packing."""
    channels = int(network_of(pipe).config.in_channels)
    return channels // 4 if is_flux(pipe) else channels


def pack(latent: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> Flux's [B, (h/2)(w/2), 4C] tokens of 2x2 patches (the layout of `FluxPipeline`)."""
    b, c, h, w = latent.shape
    return latent.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack` for latents of `height` x `width`."""
    b, _, features = tokens.shape
    return tokens.view(b, height // 2, width // 2, features // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(
        b, features // 4, height, width)


def patch_ids(height: int, width: int, device, dtype) -> torch.Tensor:
    """Flux's position ids of the (height/2) x (width/2) latent patches: (0, row, column) per token."""
    rows, columns = torch.meshgrid(torch.arange(height // 2), torch.arange(width // 2), indexing="ij")
    return torch.stack([torch.zeros_like(rows), rows, columns], dim=-1).reshape(-1, 3).to(device=device, dtype=dtype)


def is_sdxl(pipe) -> bool:
    """Whether the pipeline conditions its UNet the SDXL way (two text encoders, text-time embedding)."""
    unet = getattr(pipe, "unet", None)
    return unet is not None and getattr(unet.config, "addition_embed_type", None) == "text_time" and hasattr(pipe, "text_encoder_2")


def is_sd3(pipe) -> bool:
    """Whether the pipeline's network is an SD3 MMDiT (joint attention, pooled projections, flow matching)."""
    return type(getattr(pipe, "transformer", None)).__name__ == "SD3Transformer2DModel"


#: The model families diffinv runs, as `model_family` names them.
FAMILIES = ("sd", "sdxl", "sd3", "flux")


def model_family(pipe) -> str:
    """The pipeline's model family, decided once: "sd" (SD 1.x/2.x), "sdxl", "sd3" or "flux"."""
    if is_flux(pipe):
        return "flux"
    if is_sd3(pipe):
        return "sd3"
    return "sdxl" if is_sdxl(pipe) else "sd"


def check_guidance(guidance: float) -> float:
    """Return `guidance` if it is a usable classifier-free guidance scale (finite, >= 0), else raise ValueError."""
    if not math.isfinite(float(guidance)) or float(guidance) < 0:
        raise ValueError(f"guidance must be a finite number >= 0, got {guidance} (at most 1: no classifier-free guidance)")
    return float(guidance)


class Denoiser:
    """Guided network output for a fixed prompt, guidance scale and prediction type.

    As in diffusers, a guidance scale above 1 mixes the unconditional and conditional predictions
    (uncond + w (cond - uncond)); at most 1 the conditional prediction is used alone. NaN, infinite
    and negative scales are refused.
    """

    def __init__(
        self,
        network,
        prompt_embeds: torch.Tensor,
        negative_embeds: torch.Tensor | None,
        guidance: float,
        prediction_type: str,
        added: dict[str, torch.Tensor] | None = None,
        negative_added: dict[str, torch.Tensor] | None = None,
        text_ids: torch.Tensor | None = None,
        embedded_guidance: bool = False,
        family: str = "sd",
    ) -> None:
        check_guidance(guidance)
        if family not in FAMILIES:
            raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
        #: "sd", "sdxl", "sd3" or "flux": how the network is called and which presets apply (EasyInv's)
        self.family = family
        self.network = network
        self.guidance = float(guidance)
        self.prediction_type = prediction_type
        self.guided = self.guidance > 1.0 and negative_embeds is not None
        embeds = torch.cat([negative_embeds, prompt_embeds]) if self.guided else prompt_embeds
        # read once: diffusers' `device` / `dtype` walk every submodule (2 ms per call on a small UNet)
        self.device, self.network_dtype = network.device, network.dtype
        self.embeds = embeds.to(self.device, self.network_dtype)
        # SDXL's added conditioning (pooled text embeddings, size/crop time ids) or SD3's pooled projections,
        # batched like the embeddings
        if added is not None and self.guided:
            added = {key: torch.cat([negative_added[key], value]) for key, value in added.items()}
        self.added = None if added is None else {k: v.to(self.device, self.network_dtype) for k, v in added.items()}
        # Flux: text token ids, and guidance given to the network (distilled) instead of two branches
        self.text_ids = text_ids
        self.embedded_guidance = embedded_guidance
        self.nfe = 0

    @staticmethod
    def check_prompt_length(pipe, prompts: list[str]) -> None:
        """Warn (one line) when a prompt is longer than the CLIP text encoder reads: the rest is cut off."""
        tokenizer = getattr(pipe, "tokenizer", None)
        limit = getattr(tokenizer, "model_max_length", None)
        if tokenizer is None or not limit or limit > 100_000:
            return
        for prompt in dict.fromkeys(prompts):
            count = len(tokenizer(prompt, truncation=False).input_ids)
            if count > limit:
                shown = prompt if len(prompt) <= 40 else prompt[:37] + "..."
                warnings.warn(f"the prompt {shown!r} is {count} tokens long; the text encoder reads the first {limit} "
                              f"(start and end tokens included) and the rest is cut off", UserWarning, stacklevel=3)

    @classmethod
    def from_pipeline(
        cls,
        pipe,
        prompt: str | list[str],
        batch_size: int,
        guidance: float,
        prediction_type: str,
        negative_prompt: str | list[str] | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> "Denoiser":
        """Encode `prompt` with the pipeline's text encoder(s) and build the guided denoiser for `batch_size`
        latents. SDXL pipelines also get their pooled embeddings and the time ids of `image_size` (height,
        width; default the pipeline's own size), as `StableDiffusionXLPipeline` makes them; SD3 pipelines
        their pooled projections."""
        prompts = [prompt] * batch_size if isinstance(prompt, str) else list(prompt)
        if len(prompts) != batch_size:
            raise ValueError(f"got {len(prompts)} prompts for {batch_size} latents")
        guided = check_guidance(guidance) > 1.0
        cls.check_prompt_length(pipe, prompts + ([negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt or [])))
        network = network_of(pipe)
        with torch.inference_mode():
            if is_flux(pipe):  # no negative branch: guidance is an input of the (guidance-distilled) network
                if negative_prompt is not None:
                    raise ValueError("Flux takes guidance as a network input; negative prompts (true CFG) are not supported")
                embeds, pooled, text_ids = pipe.encode_prompt(prompts, None, device=network.device, num_images_per_prompt=1)
                return cls(network, embeds, None, guidance, prediction_type, {"pooled_projections": pooled},
                           text_ids=text_ids, embedded_guidance=bool(network.config.guidance_embeds), family="flux")
            if is_sd3(pipe):
                positive, negative, pooled, negative_pooled = pipe.encode_prompt(
                    prompts, None, None, device=network.device, num_images_per_prompt=1, do_classifier_free_guidance=guided,
                    negative_prompt=negative_prompt)
                return cls(network, positive, negative, guidance, prediction_type, {"pooled_projections": pooled},
                           {"pooled_projections": negative_pooled} if guided else None, family="sd3")
            if not is_sdxl(pipe):
                positive, negative = pipe.encode_prompt(prompts, network.device, 1, guided, negative_prompt=negative_prompt)
                return cls(network, positive, negative, guidance, prediction_type)
            positive, negative, pooled, negative_pooled = pipe.encode_prompt(
                prompts, device=network.device, num_images_per_prompt=1, do_classifier_free_guidance=guided,
                negative_prompt=negative_prompt)
            size = image_size or (pipe.default_sample_size * pipe.vae_scale_factor,) * 2
            time_ids = pipe._get_add_time_ids(tuple(size), (0, 0), tuple(size), dtype=positive.dtype,
                                              text_encoder_projection_dim=int(pooled.shape[-1])).repeat(batch_size, 1)
        negative_added = {"text_embeds": negative_pooled, "time_ids": time_ids} if guided else None
        return cls(network, positive, negative, guidance, prediction_type, {"text_embeds": pooled, "time_ids": time_ids},
                   negative_added, family="sdxl")

    def repeated(self, count: int) -> "Denoiser":
        """A copy for the latents repeated `count` times along the batch (x.repeat(count, ...)): the prompt
        embeddings tiled alike, the unconditional and conditional halves kept apart. The copy counts its
        own network calls, not this one's."""
        twin = copy.copy(self)
        halves = self.embeds.chunk(2) if self.guided else (self.embeds,)
        twin.embeds = torch.cat([half.repeat(count, 1, 1) for half in halves])
        if self.added is not None:
            twin.added = {key: torch.cat([half.repeat(count, 1) for half in (value.chunk(2) if self.guided else (value,))])
                          for key, value in self.added.items()}
        twin.nfe = 0
        return twin

    @property
    def dtype(self) -> torch.dtype:
        return self.network_dtype

    def output(self, x: torch.Tensor, timestep: int) -> torch.Tensor:
        """The guided network output at latent `x`, in `x`'s dtype (float32 solver state stays float32 whatever
        the network's dtype); a float16/bfloat16 network's NaN or inf raises HalfPrecisionOverflow."""
        model_input = x.to(self.device, self.network_dtype)
        if self.guided:
            model_input = torch.cat([model_input, model_input])
        if self.family == "flux":  # packed latents, timestep / 1000, guidance as an input
            raw = self._flux_output(model_input, timestep)
        elif self.family == "sd3":  # timesteps as a float batch
            times = torch.full((model_input.shape[0],), float(timestep), device=self.device, dtype=torch.float32)
            raw = self.network(hidden_states=model_input, timestep=times, encoder_hidden_states=self.embeds,
                               pooled_projections=self.added["pooled_projections"], return_dict=False)[0]
        else:
            raw = self.network(model_input, timestep, encoder_hidden_states=self.embeds, added_cond_kwargs=self.added,
                               return_dict=False)[0]
        self.nfe += 1
        check_finite(raw, self.network_dtype, f"the network's output at timestep {float(timestep):g}")
        if self.guided:
            unconditional, conditional = raw.chunk(2)
            raw = unconditional + self.guidance * (conditional - unconditional)
        return raw.to(x.dtype)

    def _flux_output(self, model_input: torch.Tensor, timestep: int | float) -> torch.Tensor:
        """One call of a Flux transformer on unpacked latents, as `FluxPipeline` makes it."""
        count, _, height, width = model_input.shape
        times = torch.full((count,), float(timestep), device=self.device, dtype=model_input.dtype) / 1000
        guidance = (torch.full((count,), self.guidance, device=self.device, dtype=torch.float32)
                    if self.embedded_guidance else None)
        tokens = self.network(
            hidden_states=pack(model_input), timestep=times, guidance=guidance,
            pooled_projections=self.added["pooled_projections"], encoder_hidden_states=self.embeds, txt_ids=self.text_ids,
            img_ids=patch_ids(height, width, self.device, model_input.dtype), return_dict=False,
        )[0]
        return unpack(tokens, height, width)

    def predict(self, x: torch.Tensor, timestep: int, point: NoiseLevel) -> Prediction:
        """(x0, eps) of latent `x` at noise level `point`, the network seeing `timestep`."""
        return predict(self.output(x, timestep), x, point, self.prediction_type)
