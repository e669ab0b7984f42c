"""Stage 2: text encoder + UNet trained together on latents of rendered scenes (epsilon prediction).

The frozen stage-1 autoencoder encodes `n_scenes` rendered training scenes once (posterior means);
their global standard deviation gives the pipeline's `scaling_factor`. Captions are dropped to ""
with probability `drop` so classifier-free guidance works; the loss is the min-SNR-weighted
epsilon MSE on the Stable Diffusion 1.x noise schedule.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from diffinv.testing import SD_SCHEDULER_CONFIG
from diffinv.tokenizer import build_tokenizer
from diffinv.train.data import scene_batch, to_tensor, train_combos
from diffinv.train.loop import latest_checkpoint, load_modules, step_rng, train
from diffinv.train.vae import build_vae, decoder_modules, stored_arch

DEFAULT_UNET = dict(channels=(32, 64, 128), text_width=64, text_layers=2)


def build_text_encoder(tokenizer: CLIPTokenizer, width: int = 64, layers: int = 2) -> CLIPTextModel:
    """A small `CLIPTextModel` over `tokenizer`'s vocabulary."""
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=width * 2,
            num_attention_heads=4,
            num_hidden_layers=layers,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def build_unet(channels: tuple[int, ...] = (32, 64, 128), text_width: int = 64, sample_size: int = 16,
               latent_channels: int = 4, **_: object) -> UNet2DConditionModel:
    """A `UNet2DConditionModel` with cross-attention in every block but the first (full-resolution) one."""
    n = len(channels)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=tuple(channels),
        layers_per_block=1,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=text_width,
        attention_head_dim=4,
        norm_num_groups=16,
    )


def tokenize(tokenizer: CLIPTokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids padded to the tokenizer's max length, as `StableDiffusionPipeline` makes them."""
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def load_vae(out: Path, finetuned_decoder: bool = True) -> AutoencoderKL:
    """The stage-1 autoencoder from out/vae's last checkpoint (decoder from out/vae_decoder if any), frozen."""
    config = json.loads((Path(out) / "vae" / "config.json").read_text())
    vae = build_vae(**stored_arch(config))
    load_modules(Path(out) / "vae", {"vae": vae})
    if finetuned_decoder and latest_checkpoint(Path(out) / "vae_decoder") is not None:
        load_modules(Path(out) / "vae_decoder", decoder_modules(vae))
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_scenes(vae: AutoencoderKL, n: int, seed: int, batch: int = 250) -> tuple[torch.Tensor, list[str]]:
    """Posterior-mean latents [n, C, 16, 16] and captions of `n` rendered scenes of the training combos."""
    rng = np.random.default_rng([seed, 77])
    combos = train_combos()
    latents, captions = [], []
    for start in range(0, n, batch):
        _, images, caps = scene_batch(rng, min(batch, n - start), combos)
        latents.append(vae.encode(to_tensor(images)).latent_dist.mean)
        captions += caps
    return torch.cat(latents), captions


def latent_dataset(out: Path, n: int, seed: int) -> dict:
    """Encoded training scenes, cached in out/unet/latents.pt (recomputed if n or seed differ)."""
    path = Path(out) / "unet" / "latents.pt"
    if path.exists():
        cached = torch.load(path, weights_only=False)
        if cached["n"] == n and cached["seed"] == seed:
            return cached
    latents, captions = encode_scenes(load_vae(out, finetuned_decoder=False), n, seed)
    data = dict(n=n, seed=seed, latents=latents, captions=captions,
                scaling_factor=float(1.0 / latents.std()))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data


def min_snr_weight(alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """min(SNR, gamma) / SNR: the min-SNR loss weight for epsilon prediction."""
    snr = alphas_cumprod[t] / (1 - alphas_cumprod[t])
    return snr.clamp(max=gamma) / snr


def train_unet(out: Path, steps: int = 4000, batch: int = 64, lr: float = 1e-3, seed: int = 0,
               n_scenes: int = 16000, drop: float = 0.1, until: int | None = None, **arch) -> tuple[CLIPTextModel, UNet2DConditionModel]:
    """Train (or resume) text encoder + UNet into out/unet on latents of the out/vae autoencoder."""
    data = latent_dataset(out, n_scenes, seed)
    arch = {**DEFAULT_UNET, **arch, "latent_channels": int(data["latents"].shape[1])}
    latents = data["latents"] * data["scaling_factor"]
    tokenizer = build_tokenizer()
    ids = tokenize(tokenizer, sorted(set(data["captions"])) + [""])
    index = {c: i for i, c in enumerate(sorted(set(data["captions"])))}
    caption_ids = torch.tensor([index[c] for c in data["captions"]])
    empty = len(index)
    torch.manual_seed(seed)
    text_encoder = build_text_encoder(tokenizer, arch["text_width"], arch["text_layers"])
    unet = build_unet(**arch)
    alphas_cumprod = DDIMScheduler(**SD_SCHEDULER_CONFIG).alphas_cumprod.float()
    config = dict(arch=arch, steps=steps, batch=batch, lr=lr, seed=seed, n_scenes=n_scenes, drop=drop,
                  scaling_factor=data["scaling_factor"])

    def loss_fn(step: int) -> torch.Tensor:
        _, gen = step_rng(seed, step)
        pick = torch.randint(0, len(latents), (batch,), generator=gen)
        z0 = latents[pick]
        which = torch.where(torch.rand(batch, generator=gen) < drop, empty, caption_ids[pick])
        t = torch.randint(0, len(alphas_cumprod), (batch,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        cond = text_encoder(ids[which])[0]
        pred = unet(zt, t, cond).sample
        per_sample = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        return (min_snr_weight(alphas_cumprod, t) * per_sample).mean()

    train(Path(out) / "unet", {"text_encoder": text_encoder, "unet": unet}, loss_fn, steps, lr, seed, config,
          until=until)
    return text_encoder.eval(), unet.eval()
