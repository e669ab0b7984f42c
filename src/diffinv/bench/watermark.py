"""Tree-Ring benchmark: detection (AUC, TPR at 1% FPR) and 3-key attribution per inversion pipeline and attack.

Images are generated once (N clean, N with each of 3 keys); each attack is applied to them, and each
inversion pipeline ("decoder+method", e.g. "gradient-free+exact") recovers their noise in one batched,
measured run. Detection scores are Tree-Ring distances to key 0 (clean images are the negatives), or with
`score="correlation"` the matched filter's; attribution picks the best-scoring of the 3 keys for the 3N
watermarked images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from diffinv.applications.attacks import apply_attack, check_attack
from diffinv.applications.watermark import (
    DEFAULT_SCORE,
    WatermarkKey,
    check_score,
    classify,
    default_radius,
    embed,
    make_key,
    watermark_score,
)
from diffinv.bench.methods import resolve_method
from diffinv.bench.tables import format_table
from diffinv.decoder import DECODERS, DecoderMethod
from diffinv.inversion import Method
from diffinv.pipeline import generate, invert, latent_shape, seeded_noise
from diffinv.utils.images import pil_to_tensor, tensor_to_pil
from diffinv.utils.metrics import auc, tpr_at_fpr

DEFAULT_PIPELINES = ("encoder+naive", "gradient+naive", "gradient-free+naive", "gradient-free+exact")
DEFAULT_ATTACKS = ("clean", "jpeg", "rotation", "crop", "blur", "noise", "brightness")
DEFAULT_PROMPTS = (
    "a red circle on a blue background", "a green square on a white background", "a yellow triangle on a black background",
    "a purple circle on a yellow background", "a white square on a red background", "an orange triangle on a green background",
    "a blue square on an orange background", "a black circle on a purple background",
)
COLUMNS = [
    ("attack", "attack", ""), ("pipeline", "pipeline", ""), ("auc", "AUC", ".3f"), ("tpr_at_1fpr", "TPR@1%FPR", ".3f"),
    ("accuracy", "3-key acc", ".3f"), ("correct", "correct", ""), ("seconds", "seconds", ".1f"),
    ("peak_memory_mb", "peak MB", ".1f"),
]


def parse_pipeline(spec: str) -> tuple[DecoderMethod, Method]:
    """ "decoder+method", either with options ("gradient-free:clipped=false+exact:tol=1e-5") -> (decoder
    configuration, method configuration), both checked."""
    decoder, plus, method_spec = spec.partition("+")
    if not plus:
        raise ValueError(f"inversion pipeline {spec!r} is not DECODER+METHOD (e.g. gradient-free+exact)")
    return DECODERS.resolve(decoder), resolve_method(method_spec)


@dataclass
class WatermarkSet:
    """The generated images: clean ones, then N per key; with the keys themselves."""

    images: torch.Tensor
    key_index: torch.Tensor  # -1 for clean
    keys: list[WatermarkKey]
    prompts: list[str]


def make_images(pipe, n: int, prompts: Sequence[str], sampler: str | None, steps: int, guidance: float, seed: int = 0,
                radius: int | None = None) -> WatermarkSet:
    """N clean images and N images for each of 3 keys (prompts cycled, keys of `radius`, None: the scaled
    Tree-Ring default), from seeded noise."""
    shape = latent_shape(pipe, 1)[1:]
    keys = [make_key(shape, radius=radius, seed=seed + index) for index in range(3)]
    chosen = [prompts[i % len(prompts)] for i in range(n)]
    batches, labels = [], []
    for label in (-1, 0, 1, 2):
        noise = seeded_noise(pipe, seed + 100 + label, n)
        if label >= 0:
            noise = embed(noise, keys[label])
        batches.append(generate(pipe, chosen, noise=noise, sampler=sampler, steps=steps, guidance=guidance).image)
        labels += [label] * n
    return WatermarkSet(torch.cat(batches), torch.tensor(labels), keys, chosen * 4)


def run_watermark_benchmark(
    pipe,
    n: int = 8,
    pipelines: Sequence[str] = DEFAULT_PIPELINES,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    sampler: str | None = None,
    steps: int = 50,
    generation_guidance: float = 7.5,
    inversion_guidance: float = 1.0,
    known_prompt: bool = False,
    seed: int = 0,
    score: str = DEFAULT_SCORE,
    radius: int | None = None,
) -> list[dict[str, Any]]:
    """Rows of detection and attribution results, one per (attack, pipeline).

    Inversion uses the empty prompt at `inversion_guidance` (Tree-Ring's setting), or with
    `known_prompt` each image's own prompt at the generation guidance (the exact-inversion setting).
    `score` is "correlation" (the default) or "distance" (Tree-Ring's); `radius` that of the keys (None: the
    default, a quarter of the latent's side; the paper's is `paper_radius`).
    """
    check_score(score)
    parsed = [parse_pipeline(spec) for spec in pipelines]
    for attack in attacks:
        check_attack(attack)
    data = make_images(pipe, n, prompts, sampler, steps, generation_guidance, seed, radius)
    inversion_prompt = data.prompts if known_prompt else ""
    if known_prompt:
        inversion_guidance = generation_guidance
    rows = []
    progress = tqdm(total=len(attacks) * len(parsed), desc="watermark bench", leave=False)
    for attack in attacks:
        # Image i of every class gets the same draw of a random attack (crop window, noise, brightness factor).
        attacked = torch.stack([pil_to_tensor(apply_attack(image, attack, seed=seed + index % n))
                                for index, image in enumerate(tensor_to_pil(data.images))])
        for spec, (decoder, method) in zip(pipelines, parsed):
            result = invert(pipe, attacked, prompt=inversion_prompt, sampler=sampler, steps=steps,
                            guidance=inversion_guidance, method=method, decoder=decoder)
            noise = result.noise.cpu()
            clean, first = data.key_index == -1, data.key_index == 0
            scores = watermark_score(noise, data.keys[0], score)  # higher = watermarked
            marked = data.key_index >= 0
            predicted = classify(noise[marked], data.keys, score)
            correct = int((predicted == data.key_index[marked]).sum())
            rows.append({
                "attack": attack, "pipeline": spec, "decoder": decoder.name, "decoder_config": decoder.as_dict(), "method": method.name, "method_config": method.as_dict(), "sampler": result.sampler,
                "steps": steps, "guidance": inversion_guidance, "generation_guidance": generation_guidance, "known_prompt": known_prompt, "n": n,
                "score": score, "radius": data.keys[0].radius, "default_radius": default_radius(data.keys[0].mask.shape[-2]),
                "auc": auc(scores[first].tolist(), scores[clean].tolist()),
                "tpr_at_1fpr": tpr_at_fpr((-scores[first]).tolist(), (-scores[clean]).tolist()),
                "accuracy": correct / int(marked.sum()), "correct": f"{correct}/{int(marked.sum())}",
                "nfe": result.nfe, "seconds": result.seconds, "peak_memory_bytes": result.peak_memory_bytes,
                "decoder_seconds": result.decoder_seconds, "decoder_peak_memory_bytes": result.decoder_peak_memory_bytes,
            })
            progress.update()
    progress.close()
    return rows


def format_watermark_tables(rows: list[dict[str, Any]]) -> str:
    """The rows as one text table (peak memory in MB); the title names the score and the keys' radius where
    they are not the defaults (the correlation score, a radius of a quarter of the latent's side)."""
    shown = [{**row, "peak_memory_mb": row["peak_memory_bytes"] / 2**20} for row in rows]
    settings = f"n={rows[0]['n'] if rows else 0} per class"
    if rows and rows[0].get("score", DEFAULT_SCORE) != DEFAULT_SCORE:
        settings += f", score {rows[0]['score']}"
    if rows and rows[0].get("radius", 0) != rows[0].get("default_radius", 0):
        settings += f", key radius {rows[0]['radius']}"
    return format_table(shown, COLUMNS, title=f"Tree-Ring detection and 3-key attribution ({settings})")
