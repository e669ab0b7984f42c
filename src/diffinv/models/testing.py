"""Tiny Stable-Diffusion-style pipelines with random weights, built from configs in memory.

They run every real diffusers code path in milliseconds on a CPU, so tests (and anyone trying the
library without weights) need no download.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from diffinv.models.tokenizer import build_tokenizer

#: The noise schedule of Stable Diffusion 1.x (what its scheduler_config.json says).
SD_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
    prediction_type="epsilon",
)


def tiny_text_config(tokenizer, **extra) -> CLIPTextConfig:
    """The tiny CLIP text-encoder config every test pipeline uses (2 layers, width 32), plus `extra` fields."""
    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=tokenizer.model_max_length, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **extra,
    )


def tiny_vae(image_size: int, blocks: int = 2, **extra) -> AutoencoderKL:
    """The tiny 4-channel `AutoencoderKL` of the test pipelines (factor 2**(blocks-1)), plus `extra` config
    fields (scaling and shift factors, no quant convs for SD3/Flux)."""
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=tuple([8, 16, 16, 16][:blocks]),
        down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
        layers_per_block=1, norm_num_groups=4, sample_size=image_size, **extra,
    )


def tiny_pipeline(
    seed: int = 0,
    sample_size: int = 8,
    vae_blocks: int = 2,
    prediction_type: str = "epsilon",
    timestep_spacing: str = "leading",
) -> StableDiffusionPipeline:
    """A random-weight `StableDiffusionPipeline`: latents 4 x sample_size^2, VAE factor 2**(vae_blocks-1)."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_encoder = CLIPTextModel(tiny_text_config(tokenizer))
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = tiny_vae(sample_size * 2 ** (vae_blocks - 1), vae_blocks)
    scheduler = DDIMScheduler(**{**SD_SCHEDULER_CONFIG, "prediction_type": prediction_type, "timestep_spacing": timestep_spacing})
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(torch.float32)


def tiny_sdxl_pipeline(seed: int = 0, sample_size: int = 8):
    """A random-weight `StableDiffusionXLPipeline`: two text encoders (the second with projection, giving
    the pooled embedding), a UNet with SDXL's added text-time conditioning, latents 4 x sample_size^2."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()

    def text_config() -> CLIPTextConfig:
        return tiny_text_config(tokenizer, projection_dim=32, hidden_act="gelu")

    text_encoder = CLIPTextModel(text_config())
    text_encoder_2 = CLIPTextModelWithProjection(text_config())
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64, norm_num_groups=8,
    )
    vae = tiny_vae(sample_size * 2, scaling_factor=0.13025)
    config = {**SD_SCHEDULER_CONFIG, "timestep_spacing": "leading"}
    sampler = EulerDiscreteScheduler(**{k: v for k, v in config.items() if k in ("num_train_timesteps", "beta_start",
                                        "beta_end", "beta_schedule", "steps_offset", "timestep_spacing", "prediction_type")})
    sampler.register_to_config(clip_sample=False, set_alpha_to_one=False)  # as SDXL's scheduler_config.json has them
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                                     tokenizer_2=tokenizer, unet=unet, scheduler=sampler, force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(torch.float32)


def save_tiny_pipeline(folder: str | Path, **kwargs) -> Path:
    """Build a tiny pipeline and `save_pretrained` it into `folder` (a real diffusers folder on disk)."""
    folder = Path(folder)
    tiny_pipeline(**kwargs).save_pretrained(folder)
    return folder


def tiny_sd3_pipeline(seed: int = 0, sample_size: int = 8, shift: float = 3.0, dynamic_shifting: bool = False):
    """A random-weight `StableDiffusion3Pipeline`: two CLIP text encoders with projection (pooled embedding
    = both projections), no T5 (SD3 then pads with zeros), an MMDiT transformer with patch size 2, a VAE
    with SD3's shift factor, and the flow-matching Euler scheduler (`shift`, or dynamic shifting by image size)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()

    def text_encoder() -> CLIPTextModelWithProjection:
        return CLIPTextModelWithProjection(tiny_text_config(tokenizer, projection_dim=32, hidden_act="gelu"))

    transformer = SD3Transformer2DModel(
        sample_size=sample_size, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64,
        pos_embed_max_size=sample_size,
    )
    vae = tiny_vae(sample_size * 2, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift, use_dynamic_shifting=dynamic_shifting)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder(), tokenizer=tokenizer,
        text_encoder_2=text_encoder(), tokenizer_2=tokenizer, text_encoder_3=None, tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(torch.float32)


def tiny_flux_pipeline(seed: int = 0, guidance_embeds: bool = True):
    """A random-weight `FluxPipeline`: a CLIP text encoder (pooled embedding) and a small T5 (token embeddings;
    the local CLIP tokenizer stands in for T5's), a Flux transformer on 2x2-packed latents with guidance
    embedding (FLUX.1-dev style, or none: schnell style), a VAE with a shift factor, and the flow-matching
    scheduler with dynamic shifting as FLUX.1 configures it. diffinv's default images are the VAE's 32x32
    (latents 4 x 16 x 16); diffusers' own call defaults to 256x256 here, so pass height and width to it."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_encoder = CLIPTextModel(tiny_text_config(tokenizer, hidden_act="gelu"))
    t5 = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, dropout_rate=0.0,
                                 pad_token_id=tokenizer.pad_token_id))
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=guidance_embeds, axes_dims_rope=(4, 2, 2),
    )
    vae = tiny_vae(32, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=t5,
                        tokenizer_2=tokenizer, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(torch.float32)
