"""Stage 3: assemble the trained parts into a `StableDiffusionPipeline` folder in fp16 safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from diffinv.models.tokenizer import build_tokenizer
from diffinv_train.loop import load_modules
from diffinv_train.unet import DEFAULT_UNET, build_pipeline, build_text_encoder, build_unet, load_exported_vae, load_vae


def assemble(out: Path) -> StableDiffusionPipeline:
    """A float32 pipeline from the last checkpoints in out/vae and out/unet (the UNet's and text
    encoder's exponential average of the weights when the run kept one)."""
    out = Path(out)
    config = json.loads((out / "unet" / "config.json").read_text())
    arch = {**DEFAULT_UNET, **config["arch"]}
    text_encoder = build_text_encoder(build_tokenizer(), arch["text_width"], arch["text_layers"])
    unet = build_unet(**arch)
    load_modules(out / "unet", {"text_encoder": text_encoder, "unet": unet})
    autoencoder_from = config.get("init_from") or config.get("vae_from")
    if autoencoder_from:  # the run trained on an exported folder's autoencoder
        vae = load_exported_vae(autoencoder_from)
    else:
        vae = load_vae(out)
    return build_pipeline(vae, text_encoder, unet, config["scaling_factor"])


def export(out: Path, folder: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write the pipeline from `out`'s checkpoints to `folder` (diffusers layout, safetensors, `dtype`)."""
    pipe = assemble(out).to(dtype)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder, safe_serialization=True, variant=None)
    _drop_source_paths(folder)
    return folder


def _drop_source_paths(folder: Path) -> None:
    """Remove `_name_or_path` from the saved component configs: diffusers writes it for a component loaded with
    `from_pretrained` (the autoencoder of an `init_from` / `vae_from` run), and it would name a folder of the
    exporting machine; loading sets it again from wherever the folder is."""
    for config_file in folder.glob("*/config.json"):
        config = json.loads(config_file.read_text())
        if config.pop("_name_or_path", None) is not None:
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
