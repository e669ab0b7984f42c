"""Measure the bundled model: prompt adherence on held-out caption combos, and autoencoder PSNR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from diffinv.models.autoencoder import Autoencoder
from diffinv_train.data import (
    HELDOUT_PHOTOS,
    TRAIN_PHOTOS,
    center_photo,
    heldout_combos,
    photo_batch,
    scene_batch,
    to_tensor,
    train_combos,
)
from diffinv.bench.scenes import Reading, caption, random_scene, read_scene, render

EVAL_SEED = 20_000  # data streams for evaluation; training uses other seeds


def load_pipeline(model: Path | str) -> StableDiffusionPipeline:
    """The pipeline folder in float32 on the CPU, progress bar off."""
    pipe = StableDiffusionPipeline.from_pretrained(str(model), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(pipe: StableDiffusionPipeline, prompts: list[str], seeds: list[int], steps: int = 50,
             guidance: float = 7.5, chunk: int = 48) -> np.ndarray:
    """uint8 images [N, H, W, 3], one per (prompt, seed) pair, with the pipeline's DDIM scheduler."""
    out = []
    for start in range(0, len(prompts), chunk):
        gens = [torch.Generator().manual_seed(s) for s in seeds[start: start + chunk]]
        images = pipe(prompts[start: start + chunk], num_inference_steps=steps, guidance_scale=guidance,
                      generator=gens, output_type="np").images
        out.append(np.round(np.clip(images, 0, 1) * 255).astype(np.uint8))
    return np.concatenate(out)


def adherence(pipe: StableDiffusionPipeline, combos: list[tuple[str, str, str]], seeds: int, steps: int,
              guidance: float) -> dict:
    """Fractions of generated samples whose background / shape color / shape kind the checker reads as prompted."""
    pairs = [(c, s) for c in combos for s in range(seeds)]
    images = generate(pipe, [caption(*c) for c, _ in pairs], [s for _, s in pairs], steps, guidance)
    return score([read_scene(im) for im in images], [c for c, _ in pairs])


def score(readings: list[Reading], combos: list[tuple[str, str, str]]) -> dict:
    """Fractions of readings that match their (color, shape, background) combo, part by part."""
    def frac(test) -> float:
        return float(np.mean([test(r, c) for r, c in zip(readings, combos)]))

    return dict(samples=len(combos),
                background=frac(lambda r, c: r.background == c[2]),
                shape_color=frac(lambda r, c: r.color == c[0]),
                colors=frac(lambda r, c: r.color == c[0] and r.background == c[2]),
                shape=frac(lambda r, c: r.shape == c[1]),
                all=frac(lambda r, c: r.combo == tuple(c)),
                shape_confusion=confusion([c[1] for c in combos], [r.shape for r in readings]))


def confusion(truth: list[str], read: list[str | None]) -> dict[str, dict[str, int]]:
    """Counts of read shape kind (None -> "none") for each prompted shape kind."""
    table: dict[str, dict[str, int]] = {}
    for t, r in zip(truth, read):
        row = table.setdefault(t, {})
        row[r or "none"] = row.get(r or "none", 0) + 1
    return table


def checker_accuracy(n: int = 600) -> dict:
    """The checker on the renderer's own textured images (held-out combos, any rotation): colors and shape kind."""
    rng = np.random.default_rng(EVAL_SEED)
    combos = heldout_combos()
    scenes = [random_scene(rng, combos[i % len(combos)], textured=True) for i in range(n)]
    readings = [read_scene(render(s)) for s in scenes]
    return score(readings, [s.combo for s in scenes])


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of images in [-1, 1] measured on the [0, 1] scale."""
    mse = (((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


@torch.no_grad()
def autoencoder_psnr(pipe: StableDiffusionPipeline, n: int = 128) -> dict:
    """Mean PSNR of D(E(x)) (posterior mean) on new flat and textured scenes (the textured ones of held-out
    combos), held-out photos and, for reference, training photos."""
    ae = Autoencoder.from_pipeline(pipe)
    rng = np.random.default_rng(EVAL_SEED + 1)
    sets = {
        "scenes_heldout": to_tensor(scene_batch(rng, n)[1]),
        "photos_heldout_center": to_tensor(np.stack([center_photo(p) for p in HELDOUT_PHOTOS])),
        "photos_heldout_crops": to_tensor(photo_batch(rng, n, HELDOUT_PHOTOS)),
        "photos_train_center": to_tensor(np.stack([center_photo(p) for p in TRAIN_PHOTOS])),
        "textured_scenes_heldout": to_tensor(scene_batch(rng, n, heldout_combos(), textured=True)[1]),
    }
    return {name: float(psnr(ae.decode(ae.encode(x)).float(), x).mean()) for name, x in sets.items()}


def evaluate(model: Path | str, seeds: int = 4, steps: int = 50, guidance: float = 7.5, seen: bool = True) -> dict:
    """All numbers of the bundled-model report as one dict; `seen` adds 24 training combos for comparison."""
    pipe = load_pipeline(model)
    results = dict(model=str(model), steps=steps, guidance=guidance, scheduler=type(pipe.scheduler).__name__,
                   autoencoder_psnr_db=autoencoder_psnr(pipe), checker_on_renders=checker_accuracy(),
                   adherence_heldout=adherence(pipe, heldout_combos(), seeds, steps, guidance))
    if seen:
        results["adherence_seen"] = adherence(pipe, train_combos()[::6][:24], seeds, steps, guidance)
    return results


def format_table(results: dict) -> str:
    """The evaluation as a small text table."""
    lines = [f"model {results['model']}  ({results['scheduler']}, {results['steps']} steps, "
             f"guidance {results['guidance']})", "", f"{'prompt adherence':<26}{'samples':>8}{'bg':>8}"
             f"{'shape col':>10}{'both col':>10}{'shape':>8}{'all':>8}"]
    for key in ("adherence_heldout", "adherence_seen", "checker_on_renders"):
        if key not in results:
            continue
        r = results[key]
        lines.append(f"{key:<26}{r['samples']:>8}{r['background']:>8.3f}{r['shape_color']:>10.3f}"
                     f"{r['colors']:>10.3f}{r['shape']:>8.3f}{r['all']:>8.3f}")
    if "adherence_heldout" in results:
        lines += ["", "held-out shape kind read as: " + "; ".join(
            f"{k}: " + ", ".join(f"{p} {n}" for p, n in sorted(row.items()))
            for k, row in results["adherence_heldout"]["shape_confusion"].items())]
    lines += ["", f"{'autoencoder D(E(x))':<26}{'PSNR dB':>8}"]
    lines += [f"{k:<26}{v:>8.2f}" for k, v in results["autoencoder_psnr_db"].items()]
    return "\n".join(lines)


def sample_grid(model: Path | str, png: Path, seeds: int = 4, steps: int = 50, guidance: float = 7.5) -> Path:
    """A labelled grid (8 prompts x `seeds` seeds): 4 held-out and 4 seen caption combos."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pipe = load_pipeline(model)
    held, seen = heldout_combos(), train_combos()
    combos = [(c, True) for c in held[::6][:4]] + [(c, False) for c in seen[::36][:4]]
    prompts = [caption(*c) for c, _ in combos for _ in range(seeds)]
    images = generate(pipe, prompts, list(range(seeds)) * len(combos), steps, guidance)
    fig, axes = plt.subplots(len(combos), seeds, figsize=(1.2 * seeds + 2.6, 1.2 * len(combos)), squeeze=False)
    for i, (combo, is_held) in enumerate(combos):
        for j in range(seeds):
            ax = axes[i][j]
            ax.imshow(images[i * seeds + j], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
        label = f"{combo[0]} {combo[1]}\non {combo[2]}"
        axes[i][0].set_ylabel(label + ("\n(held out)" if is_held else ""), rotation=0, ha="right", va="center",
                              fontsize=7)
    fig.suptitle(f"tiny: DDIM {steps} steps, guidance {guidance}, seeds 0..{seeds - 1}", fontsize=8)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
