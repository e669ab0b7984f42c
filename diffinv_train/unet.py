"""Stage 2: text encoder + UNet trained together on latents of endless training images (epsilon prediction).

Every step renders and encodes `fresh` new images with the frozen stage-1 autoencoder (posterior
means) into a rolling buffer of `buffer` latents and draws its batch from that buffer: the data never
repeats as a fixed set does, and encoding costs a quarter of a batch per step instead of a whole one.
The images are textured scenes of the training caption combinations, photo crops ("a photo") and
dead-leaves images ("an image"): variance in every latent direction, which keeps the learnt sampler
invertible at low noise (flat scenes did not). Captions are dropped to "" with probability `drop`
for classifier-free guidance. The loss is the plain epsilon MSE with uniform timesteps (`weighting=
"uniform"`, Ho et al.'s L_simple, as Stable Diffusion trains), which gives the low-noise steps where
folds appeared as much weight as the rest; `"min-snr"` (the second model's recipe) gives t=21 a tenth.
An exponential average of the weights (decay `ema`) is what `export` writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from diffinv.models.testing import SD_SCHEDULER_CONFIG
from diffinv.models.tokenizer import build_tokenizer
from diffinv_train.data import LEAVES_CAPTION, PHOTO_CAPTION, train_combos, unet_batch
from diffinv_train.loop import latest_checkpoint, load_modules, step_rng, train
from diffinv.bench.probe import DEFAULT_SETTINGS
from diffinv.bench.scenes import caption, check_texture
from diffinv_train.vae import build_vae, decoder_modules, stored_arch

DEFAULT_UNET = dict(channels=(32, 64, 128), text_width=64, text_layers=2)
WEIGHTINGS = ("uniform", "min-snr")


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


def build_pipeline(vae: AutoencoderKL, text_encoder: CLIPTextModel, unet: UNet2DConditionModel,
                   scaling_factor: float) -> StableDiffusionPipeline:
    """The trained parts as a `StableDiffusionPipeline` (DDIM, SD 1.x betas, no safety checker)."""
    vae.register_to_config(scaling_factor=float(scaling_factor))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=build_tokenizer(), unet=unet,
        scheduler=DDIMScheduler(**SD_SCHEDULER_CONFIG), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


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


def load_exported_vae(folder: Path | str) -> AutoencoderKL:
    """The autoencoder of an exported pipeline folder (`train export`'s output), float32, frozen."""
    if not (Path(folder) / "vae").is_dir():
        raise FileNotFoundError(f"{folder} has no vae/ folder (an exported pipeline folder is expected)")
    vae = AutoencoderKL.from_pretrained(str(Path(folder) / "vae"), torch_dtype=torch.float32)
    return vae.eval().requires_grad_(False)


class LatentStream:
    """Endless training latents: a rolling buffer that `refresh` tops up with freshly rendered, encoded images.

    Captions are stored as indices into `captions` (every training caption, the generic ones, and "").
    The buffer is part of the checkpoint, so a resumed run draws exactly what an uninterrupted one does.
    """

    def __init__(self, vae: AutoencoderKL, size: int, fresh: int, combos: list[tuple[str, str, str]],
                 photo_fraction: float, leaves_fraction: float, texture: str = "luminance") -> None:
        self.vae, self.size, self.fresh, self.combos, self.texture = vae, size, fresh, combos, texture
        self.fractions = (photo_fraction, leaves_fraction)
        self.captions = sorted({caption(*c) for c in combos}) + [PHOTO_CAPTION, LEAVES_CAPTION, ""]
        self.index = {c: i for i, c in enumerate(self.captions)}
        self.latents: torch.Tensor | None = None
        self.caption_ids = torch.zeros(size, dtype=torch.long)
        self.position = 0

    @torch.no_grad()
    def encode(self, rng: np.random.Generator, n: int, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` new posterior-mean latents (unscaled) and their caption indices."""
        latents, ids = [], []
        for first in range(0, n, chunk):
            images, captions = unet_batch(rng, min(chunk, n - first), self.combos, *self.fractions, texture=self.texture)
            latents.append(self.vae.encode(images).latent_dist.mean)
            ids.append(torch.tensor([self.index[c] for c in captions]))
        return torch.cat(latents), torch.cat(ids)

    def refresh(self, rng: np.random.Generator) -> None:
        """Replace the `fresh` oldest latents by new ones (the first call fills the whole buffer)."""
        if self.latents is None:
            self.latents, self.caption_ids = self.encode(rng, self.size)
            return
        latents, ids = self.encode(rng, self.fresh)
        where = (self.position + torch.arange(self.fresh)) % self.size
        self.latents[where], self.caption_ids[where] = latents, ids
        self.position = int((self.position + self.fresh) % self.size)

    def draw(self, gen: torch.Generator, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of (unscaled) latents and caption indices drawn uniformly from the buffer."""
        pick = torch.randint(0, self.size, (batch,), generator=gen)
        return self.latents[pick], self.caption_ids[pick]

    def state_dict(self) -> dict:
        return {"latents": self.latents, "caption_ids": self.caption_ids, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.latents, self.caption_ids, self.position = state["latents"], state["caption_ids"], state["position"]


def scaling_factor(stream: LatentStream, seed: int, n: int = 512) -> float:
    """1 / std of `n` latents from a fixed draw of the training stream (the pipeline's `scaling_factor`)."""
    latents, _ = stream.encode(np.random.default_rng([seed, 10**6]), n)
    return float(1.0 / latents.std())


def min_snr_weight(alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """min(SNR, gamma) / SNR: the min-SNR loss weight for epsilon prediction."""
    snr = alphas_cumprod[t] / (1 - alphas_cumprod[t])
    return snr.clamp(max=gamma) / snr


def monotonicity_penalty(unet: UNet2DConditionModel, zt: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                         alphas_cumprod: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-sample penalty on the denoiser's x0-Jacobian J for being asymmetric or having a negative direction.

    An ideal denoiser's J = d x0 / d z_t is symmetric positive semi-definite (Tweedie: a posterior
    covariance), which is what keeps every sampler step invertible; a learnt one can fold where the data
    has little variance (the last step of DPM-Solver++ to sigma 0 on flat regions). With random u, v,
    (u'Jv - v'Ju)^2 / d estimates ||J - J'||_F^2 / d (Hutchinson), and w = J'u, a power step that leans
    towards J's most extreme directions, gives the Rayleigh quotient w'Jw / |w|^2, penalised where it is
    below 0. Both come from vector-Jacobian products of the epsilon prediction (J = (I - s J_eps) / a with
    a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar)), so this needs double backward through the UNet.
    """
    z = zt.detach().requires_grad_(True)
    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention kernel has no double backward
        eps = unet(z, t, cond).sample
    u = torch.randn(z.shape, generator=gen)
    v = torch.randn(z.shape, generator=gen)
    dims = tuple(range(1, z.dim()))
    ju = torch.autograd.grad(eps, z, u, create_graph=True, retain_graph=True)[0]
    jv = torch.autograd.grad(eps, z, v, create_graph=True, retain_graph=True)[0]
    a = alphas_cumprod[t].sqrt().view(-1)
    s = (1 - alphas_cumprod[t]).sqrt().view(-1)
    size = float(z[0].numel())
    # u'J_eps v - v'J_eps u = v.(J_eps'u) - u.(J_eps'v); the x0-Jacobian's asymmetry is -s/a times it.
    asymmetry = (s / a) * ((v * ju).sum(dims) - (u * jv).sum(dims))
    w = ju.detach()
    w = w / w.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *([1] * (z.dim() - 1)))
    jw = torch.autograd.grad(eps, z, w, create_graph=True)[0]
    rayleigh = (1 - s * (w * jw).sum(dims)) / a  # w'Jw for the unit vector w
    return asymmetry**2 / size + torch.relu(-rayleigh) ** 2


def train_unet(out: Path, steps: int = 4500, batch: int = 64, lr: float = 1e-3, seed: int = 0,
               buffer: int = 2048, fresh: int = 16, photo_fraction: float = 0.125, leaves_fraction: float = 0.125,
               drop: float = 0.1, weighting: str = "uniform", ema: float = 0.999, probe_every: int = 0,
               texture: str = "luminance", probe_settings: Sequence[tuple[str, int, float]] = DEFAULT_SETTINGS,
               agreement: float = 0.0, agreement_below: int = 200,
               monotone: float = 0.0, monotone_below: int = 200, monotone_samples: int = 8,
               until: int | None = None, init_from: Path | None = None, vae_from: Path | None = None,
               **arch) -> tuple[CLIPTextModel, UNet2DConditionModel]:
    """Train (or resume) text encoder + UNet into out/unet on latents of the out/vae autoencoder.

    `probe_every` > 0 runs `diffinv.bench.probe.invertibility` on the averaged weights every that many
    steps (a multiple of the 200-step checkpoints), once per (sampler, steps, guidance) of
    `probe_settings`, and appends its rows to out/unet/probe.jsonl.
    `init_from`, an exported pipeline folder, continues training from its weights instead: its
    autoencoder (frozen) and scaling factor, its text encoder and UNet as the starting point, with a
    new optimiser and data stream (checkpoints in out/unet, once written, take precedence on resuming).
    `vae_from`, an exported pipeline folder, trains a new UNet from scratch on that folder's autoencoder
    and scaling factor instead of out/vae's (the autoencoder stage of a recipe that was already run).
    `texture` is the scenes' texture style (`diffinv.bench.scenes.TEXTURES`).

    `agreement` > 0 adds that weight times the mean squared difference of the conditional and the
    unconditional prediction on the same noisy latent, for captioned samples at timesteps below
    `agreement_below`. At low noise the noisy latent already shows what the caption says, so an ideal
    model's two predictions agree there; classifier-free guidance multiplies a learnt disagreement by
    (w - 1), and that is what folds the guided sampler's low-noise steps.

    `monotone` > 0 adds that weight times `monotonicity_penalty` (an asymmetric or negative x0-Jacobian)
    on up to `monotone_samples` of the batch's samples at timesteps below `monotone_below`, summed and
    divided by the batch size as the agreement term is.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
    check_texture(texture)
    if not (agreement >= 0 and 0 <= agreement_below <= 1000):
        raise ValueError(f"agreement must be >= 0 and agreement_below in [0, 1000], got {agreement}, {agreement_below}")
    if not (monotone >= 0 and 0 <= monotone_below <= 1000 and monotone_samples >= 1):
        raise ValueError(f"monotone must be >= 0, monotone_below in [0, 1000] and monotone_samples >= 1, got "
                         f"{monotone}, {monotone_below}, {monotone_samples}")
    if init_from is not None and vae_from is not None:
        raise ValueError("give init_from (continue a pipeline) or vae_from (a new UNet on its autoencoder), not both")
    autoencoder_from = init_from if init_from is not None else vae_from
    if autoencoder_from is not None:
        vae = load_exported_vae(autoencoder_from)
    else:
        vae = load_vae(out, finetuned_decoder=False)
    arch = {**DEFAULT_UNET, **arch, "latent_channels": int(vae.config.latent_channels)}
    stream = LatentStream(vae, buffer, fresh, train_combos(), photo_fraction, leaves_fraction, texture)
    scale = float(vae.config.scaling_factor) if autoencoder_from is not None else scaling_factor(stream, seed)
    tokenizer = build_tokenizer()
    ids = tokenize(tokenizer, stream.captions)
    empty = stream.index[""]
    torch.manual_seed(seed)
    text_encoder = build_text_encoder(tokenizer, arch["text_width"], arch["text_layers"])
    unet = build_unet(**arch)
    if init_from is not None and latest_checkpoint(Path(out) / "unet") is None:
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(str(Path(init_from) / "unet")).float().state_dict())
        text_encoder.load_state_dict(CLIPTextModel.from_pretrained(str(Path(init_from) / "text_encoder")).float().state_dict())
        print(f"starting from the weights in {init_from}", flush=True)
    alphas_cumprod = DDIMScheduler(**SD_SCHEDULER_CONFIG).alphas_cumprod.float()
    config = dict(arch=arch, steps=steps, batch=batch, lr=lr, seed=seed, buffer=buffer, fresh=fresh,
                  photo_fraction=photo_fraction, leaves_fraction=leaves_fraction, drop=drop, weighting=weighting,
                  ema=ema, texture=texture, agreement=agreement, agreement_below=agreement_below, monotone=monotone, monotone_below=monotone_below,
                  monotone_samples=monotone_samples, scaling_factor=scale, init_from=str(init_from) if init_from else None,
                  vae_from=str(vae_from) if vae_from else None)

    def loss_fn(step: int) -> torch.Tensor:
        rng, gen = step_rng(seed, step)
        stream.refresh(rng)
        z0, which = stream.draw(gen, batch)
        z0 = z0 * scale
        which = torch.where(torch.rand(batch, generator=gen) < drop, empty, which)
        t = torch.randint(0, len(alphas_cumprod), (batch,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        cond = text_encoder(ids[which])[0]
        pred = unet(zt, t, cond).sample
        per_sample = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        if weighting == "min-snr":
            per_sample = min_snr_weight(alphas_cumprod, t) * per_sample
        loss = per_sample.mean()
        low = (t < agreement_below) & (which != empty)
        if agreement > 0 and bool(low.any()):
            empty_embedding = text_encoder(ids[empty:empty + 1])[0]  # encoded once, shared by every such sample
            unconditional = unet(zt[low], t[low], empty_embedding.expand(int(low.sum()), -1, -1)).sample
            loss = loss + agreement * ((pred[low] - unconditional) ** 2).mean(dim=(1, 2, 3)).sum() / batch
        chosen = torch.nonzero(t < monotone_below).flatten()[:monotone_samples] if monotone > 0 else []
        if len(chosen):
            penalty = monotonicity_penalty(unet, zt[chosen], t[chosen], cond[chosen], alphas_cumprod, gen)
            loss = loss + monotone * penalty.sum() / batch
        return loss

    def probe(step: int, weights: dict[str, torch.nn.Module]) -> None:
        if probe_every <= 0 or step % probe_every:
            return
        from diffinv.bench.probe import invertibility, summary

        pipe = build_pipeline(vae, weights["text_encoder"], weights["unet"], scale)
        for sampler, sampler_steps, guidance in probe_settings:
            rows = invertibility(pipe, steps=sampler_steps, guidance=guidance, sampler=sampler)
            with open(Path(out) / "unet" / "probe.jsonl", "a") as f:
                for row in rows:
                    f.write(json.dumps({"train_step": step, "steps": sampler_steps, **row}) + "\n")
            print(f"probe at step {step}, {sampler}-{sampler_steps} at guidance {guidance:g}: {summary(rows)}", flush=True)

    train(Path(out) / "unet", {"text_encoder": text_encoder, "unet": unet}, loss_fn, steps, lr, seed, config,
          until=until, ema_decay=ema, extra_state=(stream.state_dict, stream.load_state_dict), on_checkpoint=probe)
    return text_encoder.eval(), unet.eval()
