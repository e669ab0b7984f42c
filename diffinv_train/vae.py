"""Stage 1: the autoencoder (diffusers `AutoencoderKL`, 3 blocks: 64x64x3 images <-> 16x16xC latents, C = 8
by default, 4 for the first shipped version).

Trained on a mix of rendered scenes, augmented crops of scikit-image photos and dead-leaves images
(`leaves.py`) with MSE plus a tiny KL
term (weight 1e-6 of summed KL vs summed squared error, as in latent diffusion). Most steps see
random 32x32 patches of the 64x64 images (the network is convolutional, so this is 4x cheaper);
the last `full_fraction` of steps see whole 64x64 images.

`finetune_decoder` then trains the decoder alone (encoder frozen, so the latent space the UNet learns
is fixed) on whole images; it can run at the same time as stage 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from diffinv_train.data import autoencoder_batch
from diffinv_train.loop import latest_checkpoint, load_modules, step_rng, train

DEFAULT_VAE = dict(channels=(32, 64, 64), layers_per_block=1, groups=16, latent_channels=8)


def build_vae(channels: tuple[int, ...] = (32, 64, 64), layers_per_block: int = 1, groups: int = 16,
              sample_size: int = 64, latent_channels: int = 8) -> AutoencoderKL:
    """An `AutoencoderKL` with len(channels) blocks (downsampling factor 2**(len-1))."""
    n = len(channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=tuple(channels),
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=layers_per_block,
        norm_num_groups=groups,
        sample_size=sample_size,
    )


def stored_arch(config: dict) -> dict:
    """The architecture a checkpoint's config.json describes; checkpoints written before the latent
    channel count was configurable (it was always 4) have no `latent_channels`."""
    return {**DEFAULT_VAE, "latent_channels": 4, **config["arch"]}


def random_patches(images: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """One random size x size patch of each image."""
    if size >= images.shape[-1]:
        return images
    tops = torch.randint(0, images.shape[-2] - size + 1, (len(images),), generator=gen)
    lefts = torch.randint(0, images.shape[-1] - size + 1, (len(images),), generator=gen)
    return torch.stack([im[:, t: t + size, l: l + size] for im, t, l in zip(images, tops, lefts)])


def vae_loss(vae: AutoencoderKL, x: torch.Tensor, gen: torch.Generator, kl_weight: float = 1e-6) -> torch.Tensor:
    """Mean squared error of the reconstruction plus kl_weight * KL, both per pixel."""
    posterior = vae.encode(x).latent_dist
    z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
    recon = vae.decode(z).sample
    mse = ((recon - x) ** 2).mean()
    kl = posterior.kl().sum() / x.numel()
    return mse + kl_weight * kl


def train_vae(folder: Path, steps: int = 3000, batch: int = 32, patch: int = 32, lr: float = 1e-3,
              seed: int = 0, full_fraction: float = 0.1, photo_fraction: float = 0.375,
              leaves_fraction: float = 0.375, augmented: bool = True, textured: bool = True,
              until: int | None = None, **arch) -> AutoencoderKL:
    """Train (or resume) the autoencoder into `folder`; returns it.

    Each batch mixes rendered scenes, augmented photo crops (`photo_fraction`) and dead-leaves images
    (`leaves_fraction`): the last two are what lets it serve photos it never saw. Scenes are
    `textured` (the third model's recipe) or flat (the first two).
    """
    arch = {**DEFAULT_VAE, **arch}
    torch.manual_seed(seed)
    vae = build_vae(**arch)
    full_from = int(steps * (1 - full_fraction))
    config = dict(arch=arch, steps=steps, batch=batch, patch=patch, lr=lr, seed=seed, full_fraction=full_fraction,
                  photo_fraction=photo_fraction, leaves_fraction=leaves_fraction, augmented=augmented,
                  textured=textured)

    def loss_fn(step: int) -> torch.Tensor:
        rng, gen = step_rng(seed, step)
        full = step >= full_from
        x = autoencoder_batch(rng, batch // 2 if full else batch, photo_fraction, augmented=augmented,
                              leaves_fraction=leaves_fraction, textured=textured)
        return vae_loss(vae, x if full else random_patches(x, patch, gen), gen)

    train(Path(folder), {"vae": vae}, loss_fn, steps, lr, seed, config, until=until)
    return vae.eval()


def decoder_modules(vae: AutoencoderKL) -> dict[str, torch.nn.Module]:
    """The parts of the autoencoder after the latent: what `finetune_decoder` trains."""
    return {"post_quant_conv": vae.post_quant_conv, "decoder": vae.decoder}


def finetune_decoder(out: Path, steps: int = 1000, batch: int = 16, lr: float = 3e-4, seed: int = 1,
                     photo_fraction: float = 0.75, until: int | None = None) -> AutoencoderKL:
    """Train only the decoder of out/vae's last checkpoint on whole 64x64 images, into out/vae_decoder.

    Photos make up `photo_fraction` of each batch and are augmented (channel permutation, flips, turns).
    """
    config = json.loads((Path(out) / "vae" / "config.json").read_text())
    vae = build_vae(**stored_arch(config))
    load_modules(Path(out) / "vae", {"vae": vae})
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    run = dict(arch=config["arch"], steps=steps, batch=batch, lr=lr, seed=seed, photo_fraction=photo_fraction,
               encoder_checkpoint=str(latest_checkpoint(Path(out) / "vae")))

    def loss_fn(step: int) -> torch.Tensor:
        rng, gen = step_rng(seed, step)
        x = autoencoder_batch(rng, batch, photo_fraction, augmented=True)
        with torch.no_grad():
            posterior = vae.encode(x).latent_dist
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        return ((vae.decode(z).sample - x) ** 2).mean()

    train(Path(out) / "vae_decoder", decoder_modules(vae), loss_fn, steps, lr, seed, run, warmup=20, until=until)
    return vae.eval()
