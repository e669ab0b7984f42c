"""The network as the samplers see it: eps(z, t, cond) with classifier-free guidance folded in.

`Denoiser` wraps a pipeline's UNet and the prompt's text embeddings (made by the pipeline's own
`encode_prompt`), batches the unconditional and conditional branches into one call exactly like
`StableDiffusionPipeline`, and counts network evaluations (NFE: one per batched call).
"""

from __future__ import annotations

import copy
import math

import torch

from diffinv.models.prediction import Point, Prediction, predict


def is_sdxl(pipe) -> bool:
    """Whether the pipeline conditions its UNet the SDXL way (two text encoders, text-time embedding)."""
    return getattr(pipe.unet.config, "addition_embed_type", None) == "text_time" and hasattr(pipe, "text_encoder_2")


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
        unet,
        prompt_embeds: torch.Tensor,
        negative_embeds: torch.Tensor | None,
        guidance: float,
        prediction_type: str,
        added: dict[str, torch.Tensor] | None = None,
        negative_added: dict[str, torch.Tensor] | None = None,
    ) -> None:
        check_guidance(guidance)
        self.unet = unet
        self.guidance = float(guidance)
        self.prediction_type = prediction_type
        self.guided = self.guidance > 1.0 and negative_embeds is not None
        embeds = torch.cat([negative_embeds, prompt_embeds]) if self.guided else prompt_embeds
        # read once: diffusers' `device` / `dtype` walk every submodule (2 ms per call on a small UNet)
        self.device, self.network_dtype = unet.device, unet.dtype
        self.embeds = embeds.to(self.device, self.network_dtype)
        # SDXL's added conditioning (pooled text embeddings, size/crop time ids), batched like the embeddings
        if added is not None and self.guided:
            added = {key: torch.cat([negative_added[key], value]) for key, value in added.items()}
        self.added = None if added is None else {k: v.to(self.device, self.network_dtype) for k, v in added.items()}
        self.nfe = 0

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
        width; default the pipeline's own size), as `StableDiffusionXLPipeline` makes them."""
        prompts = [prompt] * batch_size if isinstance(prompt, str) else list(prompt)
        if len(prompts) != batch_size:
            raise ValueError(f"got {len(prompts)} prompts for {batch_size} latents")
        guided = check_guidance(guidance) > 1.0
        with torch.inference_mode():
            if not is_sdxl(pipe):
                positive, negative = pipe.encode_prompt(prompts, pipe.unet.device, 1, guided, negative_prompt=negative_prompt)
                return cls(pipe.unet, positive, negative, guidance, prediction_type)
            positive, negative, pooled, negative_pooled = pipe.encode_prompt(
                prompts, device=pipe.unet.device, num_images_per_prompt=1, do_classifier_free_guidance=guided,
                negative_prompt=negative_prompt)
            size = image_size or (pipe.default_sample_size * pipe.vae_scale_factor,) * 2
            time_ids = pipe._get_add_time_ids(tuple(size), (0, 0), tuple(size), dtype=positive.dtype,
                                              text_encoder_projection_dim=int(pooled.shape[-1])).repeat(batch_size, 1)
        negative_added = {"text_embeds": negative_pooled, "time_ids": time_ids} if guided else None
        return cls(pipe.unet, positive, negative, guidance, prediction_type, {"text_embeds": pooled, "time_ids": time_ids},
                   negative_added)

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
        """The guided network output at latent `x` (float32 out, whatever the network's dtype)."""
        model_input = x.to(self.device, self.network_dtype)
        if self.guided:
            model_input = torch.cat([model_input, model_input])
        raw = self.unet(model_input, timestep, encoder_hidden_states=self.embeds, added_cond_kwargs=self.added,
                        return_dict=False)[0]
        self.nfe += 1
        if self.guided:
            unconditional, conditional = raw.chunk(2)
            raw = unconditional + self.guidance * (conditional - unconditional)
        return raw.to(x.dtype)

    def predict(self, x: torch.Tensor, timestep: int, point: Point) -> Prediction:
        """(x0, eps) of latent `x` at noise level `point`, the network seeing `timestep`."""
        return predict(self.output(x, timestep), x, point, self.prediction_type)
