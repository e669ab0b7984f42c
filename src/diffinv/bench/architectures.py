"""The published architectures of SD 2.1-base, SDXL, SD3 medium and FLUX.1-dev, built with random weights.

Nothing is downloaded: each configuration is written out below, the networks and VAEs are built with
PyTorch's default initialisation directly in the requested dtype, and the text encoders are one-layer
random CLIP (and T5) stand-ins of the right output widths. `fit_reason` says, from the parameter count
(counted on the meta device, nothing allocated), whether a model can fit before it is built; the checks of
a run's settings (models, parts, chunks, the --json path) are here too, so a bad one fails before any work.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffinv.models.device import resolve_device
from diffinv.models.loading import parse_dtype
from diffinv.models.testing import SD_SCHEDULER_CONFIG
from diffinv.models.tokenizer import build_tokenizer
from diffinv.utils.outputs import check_output_file

#: The models `diffinv bench full-size --models` takes (the keys of `SPECS`).
MODEL_NAMES = ("sd2.1", "sdxl", "sd3", "flux")
#: The parts of `diffinv bench full-size` (`diffinv.bench.fullsize`).
PARTS = ("call", "inversion", "decoder", "smoke")

# The published configurations (the config.json files of the hub folders named below), written out.
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    act_fn="silu",
)
#: stabilityai/stable-diffusion-2-1-base unet/config.json
SD21_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True, norm_num_groups=32,
    flip_sin_to_cos=True, freq_shift=0,
)
#: stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280), layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, norm_num_groups=32, flip_sin_to_cos=True,
    freq_shift=0,
)
#: stabilityai/stable-diffusion-3-medium-diffusers transformer/config.json
SD3_TRANSFORMER = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=192,
)
#: black-forest-labs/FLUX.1-dev transformer/config.json
FLUX_TRANSFORMER = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
    joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
)
FLOW_VAE = dict(SD_VAE, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False)


@dataclass(frozen=True)
class Spec:
    """One architecture: its network and VAE configurations, text stand-in widths and native image side."""

    name: str
    title: str
    network: str  # the diffusers class of the denoiser
    network_config: dict[str, Any]
    vae_config: dict[str, Any]
    side: int  # native image side in pixels
    text_widths: tuple[int, ...]  # hidden width of each CLIP stand-in
    projections: tuple[int, ...] = ()  # projection width of each CLIP stand-in (empty: no projection)
    t5_width: int | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


SPECS: dict[str, Spec] = {
    "sd2.1": Spec("sd2.1", "SD 2.1-base", "UNet2DConditionModel", SD21_UNET,
                  dict(SD_VAE, sample_size=512, scaling_factor=0.18215), 512, (1024,)),
    "sdxl": Spec("sdxl", "SDXL base 1.0", "UNet2DConditionModel", SDXL_UNET,
                 dict(SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True), 1024, (768, 1280), (0, 1280)),
    "sd3": Spec("sd3", "SD3 medium (no T5)", "SD3Transformer2DModel", SD3_TRANSFORMER,
                dict(FLOW_VAE, sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609), 1024, (768, 1280), (768, 1280)),
    "flux": Spec("flux", "FLUX.1-dev", "FluxTransformer2DModel", FLUX_TRANSFORMER,
                 dict(FLOW_VAE, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159), 1024, (768,), (), t5_width=4096),
}

# ----------------------------------------------------------------------------------------------- building


def _module_class(name: str) -> type:
    import diffusers

    return getattr(diffusers, name)


def random_module(factory: Callable[[], torch.nn.Module], dtype: torch.dtype, device: torch.device, seed: int) -> torch.nn.Module:
    """`factory()` with random weights made directly in `dtype` on `device`: the parameters are created
    empty (no float32 copy first) and filled by each layer's own `reset_parameters` (PyTorch's default
    initialisation); parameters of layers without one get N(0, 0.02) (ones for norm scales, zeros for biases)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        module = factory()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            for sub in module.modules():
                for key, param in list(sub._parameters.items()):
                    if param is None:
                        continue
                    fresh = torch.empty(param.shape, dtype=dtype, device=device)
                    if key == "bias":
                        fresh.zero_()
                    elif fresh.ndim == 1:
                        fresh.fill_(1.0)
                    else:
                        fresh.normal_(0.0, 0.02)
                    sub._parameters[key] = torch.nn.Parameter(fresh, requires_grad=param.requires_grad)
            for sub in module.modules():
                reset = getattr(sub, "reset_parameters", None)
                if callable(reset) and any(p is not None for p in sub._parameters.values()):
                    reset()
    finally:
        torch.random.set_rng_state(generator_state)
    # nn.Module.to: the buffers (made in float32) cast like the weights, without diffusers' dtype-cast notice
    return torch.nn.Module.to(module, device=device, dtype=dtype).eval().requires_grad_(False)


def _meta_parameters(factory: Callable[[], torch.nn.Module]) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in factory().parameters())


def _factories(spec: Spec, tokenizer) -> dict[str, Callable[[], torch.nn.Module]]:
    """Constructors of every component of `spec` (network, VAE, text stand-ins), by pipeline component name."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    def clip(width: int, projection: int) -> Callable[[], torch.nn.Module]:
        config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=width, num_attention_heads=8,
                                num_hidden_layers=1, max_position_embeddings=tokenizer.model_max_length,
                                projection_dim=projection or width, hidden_act="gelu", bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        return (lambda: CLIPTextModelWithProjection(config)) if projection else (lambda: CLIPTextModel(config))

    parts: dict[str, Callable[[], torch.nn.Module]] = {
        "transformer" if spec.network != "UNet2DConditionModel" else "unet": lambda: _module_class(spec.network)(**spec.network_config),
        "vae": lambda: AutoencoderKL(**spec.vae_config),
    }
    projections = spec.projections or (0,) * len(spec.text_widths)
    for index, (width, projection) in enumerate(zip(spec.text_widths, projections)):
        parts["text_encoder" if index == 0 else f"text_encoder_{index + 1}"] = clip(width, projection)
    if spec.t5_width:
        config = T5Config(vocab_size=len(tokenizer), d_model=spec.t5_width, d_kv=64, d_ff=spec.t5_width, num_layers=1,
                          num_heads=8, dropout_rate=0.0, pad_token_id=tokenizer.pad_token_id)
        parts["text_encoder_2"] = lambda: T5EncoderModel(config)
    return parts


def parameter_counts(name: str) -> dict[str, int]:
    """Parameters of each component of model `name`, counted on the meta device (nothing allocated)."""
    return {part: _meta_parameters(factory) for part, factory in _factories(SPECS[name], build_tokenizer()).items()}


def _scheduler(spec: Spec):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

    if spec.name == "sdxl":
        keep = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "steps_offset", "timestep_spacing", "prediction_type")
        scheduler = EulerDiscreteScheduler(**{k: v for k, v in SD_SCHEDULER_CONFIG.items() if k in keep})
        scheduler.register_to_config(clip_sample=False, set_alpha_to_one=False)
        return scheduler
    if spec.network == "SD3Transformer2DModel":
        return FlowMatchEulerDiscreteScheduler(shift=3.0)
    if spec.network == "FluxTransformer2DModel":
        return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                               base_image_seq_len=256, max_image_seq_len=4096)
    return DDIMScheduler(**SD_SCHEDULER_CONFIG)


def build_pipeline(name: str, dtype: torch.dtype | str = torch.float32, device: torch.device | str | None = None, seed: int = 0):
    """The diffusers pipeline of model `name` (a key of `SPECS`) with random weights in `dtype` on `device`."""
    import diffusers

    spec, dtype, device = SPECS[name], parse_dtype(dtype), resolve_device(device)
    tokenizer = build_tokenizer()
    parts = {part: random_module(factory, dtype, device, seed + index)
             for index, (part, factory) in enumerate(_factories(spec, tokenizer).items())}
    scheduler = _scheduler(spec)
    if spec.network == "SD3Transformer2DModel":
        pipe = diffusers.StableDiffusion3Pipeline(scheduler=scheduler, tokenizer=tokenizer, tokenizer_2=tokenizer,
                                                  text_encoder_3=None, tokenizer_3=None, **parts)
    elif spec.network == "FluxTransformer2DModel":
        pipe = diffusers.FluxPipeline(scheduler=scheduler, tokenizer=tokenizer, tokenizer_2=tokenizer, **parts)
    elif "text_encoder_2" in parts:
        pipe = diffusers.StableDiffusionXLPipeline(scheduler=scheduler, tokenizer=tokenizer, tokenizer_2=tokenizer,
                                                   force_zeros_for_empty_prompt=True, **parts)
    else:
        pipe = diffusers.StableDiffusionPipeline(scheduler=scheduler, tokenizer=tokenizer, safety_checker=None,
                                                 feature_extractor=None, requires_safety_checker=False, **parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -------------------------------------------------------------------------------------------------- memory


def available_memory(device: torch.device) -> int:
    """Bytes free for a new model: free GPU memory on CUDA, else the machine's MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def memory_source(device: torch.device) -> str:
    """What the rows' peak memory is: the CUDA allocator's peak, or the process's resident high-water mark."""
    return "cuda max_memory_allocated" if device.type == "cuda" else "process VmHWM growth"


#: Weights are at most this share of the memory a model may use (the rest: activations, the VAE's decode).
WEIGHT_SHARE = 0.8


def fit_reason(name: str, dtype: torch.dtype, device: torch.device, limit: int | None = None) -> str | None:
    """None if model `name`'s weights in `dtype` fit `limit` bytes (default: what `available_memory` says),
    with room for activations; else the one-line reason it is skipped."""
    counts = parameter_counts(name)
    need = sum(counts.values()) * torch.finfo(dtype).bits // 8
    where = f"free on {device}" if limit is None else f"allowed on {device} (--memory-limit)"
    limit = available_memory(device) if limit is None else int(limit)
    if need <= WEIGHT_SHARE * limit:
        return None
    label = str(dtype).removeprefix("torch.")
    return (f"does not fit: {sum(counts.values()) / 1e9:.2f}B parameters are {need / 2**30:.1f} GiB in {label}, "
            f"more than {WEIGHT_SHARE:.0%} of the {limit / 2**30:.1f} GiB {where}")


# ------------------------------------------------------------------------------------------- run settings


def check_json_path(path: str | Path | None) -> None:
    """Refuse, before any work, a --json path that could not be written (`utils.outputs.check_output_file`)."""
    if path is not None:
        check_output_file(path)


def check_models(names: Sequence[str]) -> list[str]:
    """The model names, checked against `SPECS`, without repeats."""
    unknown = [name for name in names if name not in SPECS]
    if unknown or not names:
        raise ValueError(f"unknown model(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SPECS)}")
    return list(dict.fromkeys(names))


def check_chunks(names: Sequence[str]) -> list[str]:
    """--chunks: "all" (every frame at once) and/or "1" (one frame at a time)."""
    unknown = [name for name in names if name not in ("all", "1")]
    if unknown or not names:
        raise ValueError(f"unknown chunk choice(s) {', '.join(unknown) or '(none)'}; choose all and/or 1")
    return list(dict.fromkeys(names))


def check_parts(names: Sequence[str]) -> list[str]:
    unknown = [name for name in names if name not in PARTS]
    if unknown or not names:
        raise ValueError(f"unknown part(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(PARTS)}")
    return list(dict.fromkeys(names))


def device_name(device: torch.device) -> str:
    """The GPU's name, or 'cpu' / 'mps'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type
