"""Benchmark of the sampler inversions: generate from known noise, invert, compare with the truth.

For each sampler (name and steps) and guidance scale, `n` latents z_0 are sampled from seeded noise
z_T; every method then recovers z_T from z_0 (and, with `image=True`, from the decoded image through
a decoder inversion first). Each row is one (method, sampler, guidance, source) averaged over the n
inversions: noise and latent NMSE, network calls, seconds and peak memory per inversion, whether every
step met its tolerance. A method that blows up gets a row with NaN errors and `converged=False`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from diffinv.bench.methods import resolve_method
from diffinv.bench.tables import Column, format_table
from diffinv.decoder import invert_decoder
from diffinv.inversion import InversionDiverged, InversionResult, invert_sampler
from diffinv.models.autoencoder import Autoencoder
from diffinv.models.denoiser import Denoiser
from diffinv.pipeline import decode, pipeline_schedule, seeded_noise
from diffinv.sampler.sampling import sample
from diffinv.utils.metrics import nmse

DEFAULT_METHODS = ("naive", "fixed-point", "exact", "exact-gd", "exact-aa")
DEFAULT_SAMPLERS = (("ddim", 50), ("dpm++2m", 10))
DEFAULT_GUIDANCES = (1.0, 3.0, 7.5)
DEFAULT_PROMPT = "a red circle on a blue background"
COLUMNS: list[Column] = [
    ("method", "method", ""),
    ("sampler", "sampler", ""),
    ("steps", "steps", ""),
    ("guidance", "w", "g"),
    ("source", "from", ""),
    ("noise_nmse", "noise NMSE", ".2e"),
    ("latent_nmse", "latent NMSE", ".2e"),
    ("nfe", "NFE", ".0f"),
    ("seconds", "seconds", ".2f"),
    ("peak_memory_mb", "peak MB", ".1f"),
    ("max_step_residual", "max step res", ".1e"),
    ("converged", "converged", ""),
]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _summary(results: list[InversionResult | None], noises: list[torch.Tensor], latents: list[torch.Tensor]) -> dict[str, Any]:
    """Mean errors and cost over the n inversions (NaN errors if any inversion blew up)."""
    done = [(result, noise, latent) for result, noise, latent in zip(results, noises, latents) if result is not None]
    diverged = len(results) - len(done)
    residuals = [max(result.residuals) for result, _, _ in done if result.residuals]
    row: dict[str, Any] = {
        "noise_nmse": float("nan") if diverged else _mean([nmse(r.noise, z) for r, z, _ in done]),
        "latent_nmse": float("nan") if diverged else _mean([nmse(r.latent, z) for r, _, z in done]),
        "nfe": _mean([r.nfe for r, _, _ in done]),
        "seconds": _mean([r.seconds + (r.decoder_seconds or 0.0) for r, _, _ in done]),
        "peak_memory_bytes": max([r.peak_memory_bytes for r, _, _ in done], default=0),
        "max_step_residual": max(residuals) if residuals else None,
        "converged": not diverged and all(r.converged for r, _, _ in done),
        "diverged": diverged,
        # per latent, in seed order (None where it blew up): the spread a mean hides
        "noise_nmse_each": [None if r is None else nmse(r.noise, z) for r, z in zip(results, noises)],
        "converged_each": [None if r is None else bool(r.converged) for r in results],
        # how well each noise regenerates z_0 (relative), where the method checks it (multistep exact inversion)
        "regeneration_error_each": [None if r is None else r.regeneration_error for r in results],
    }
    row["peak_memory_mb"] = row["peak_memory_bytes"] / 2**20
    return row


def run_sampler_benchmark(
    pipe,
    n: int = 4,
    samplers: Sequence[tuple[str, int]] = DEFAULT_SAMPLERS,
    guidances: Sequence[float] = DEFAULT_GUIDANCES,
    methods: Sequence[str] = DEFAULT_METHODS,
    prompt: str | Sequence[str] = DEFAULT_PROMPT,
    seed: int = 0,
    tol: float | None = 1e-6,
    image: bool = False,
    decoder: str = "gradient",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Rows of the benchmark (see the module docstring); `image=True` adds rows inverted from the image.
    Several prompts are cycled over the seeds (latent i is generated and inverted with prompt i mod count)."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise ValueError("no prompt given")
    chosen = [prompts[index % len(prompts)] for index in range(n)]
    resolved = {label: resolve_method(label, tol) for label in methods}
    sources = ["latent", "image"] if image else ["latent"]
    rows: list[dict[str, Any]] = []
    jobs = [(name, steps, guidance) for name, steps in samplers for guidance in guidances]
    bar = tqdm(total=len(jobs) * len(methods) * len(sources), desc="sampler inversion", disable=not progress)
    for name, steps, guidance in jobs:
        schedule = pipeline_schedule(pipe, name, steps)
        by_prompt = {text: Denoiser.from_pipeline(pipe, text, 1, guidance, schedule.prediction_type) for text in set(chosen)}
        denoisers = [by_prompt[text] for text in chosen]
        noises = [seeded_noise(pipe, seed + index) for index in range(n)]
        latents = [sample(denoiser, schedule, noise).final for denoiser, noise in zip(denoisers, noises)]
        starts = {"latent": (latents, [None] * n)}
        if image:
            autoencoder = Autoencoder.from_pipeline(pipe)
            decoded = [invert_decoder(autoencoder, decode(pipe, latent), method=decoder) for latent in latents]
            starts["image"] = ([d.latent.float() for d in decoded], decoded)
        for source in sources:
            inputs, decoded = starts[source]
            for label in methods:
                method = resolved[label]
                results: list[InversionResult | None] = []
                for denoiser, start, stage in zip(denoisers, inputs, decoded):
                    try:
                        result = invert_sampler(denoiser, schedule, start, method)
                    except InversionDiverged:
                        result = None
                    if result is not None and stage is not None:
                        result.decoder, result.decoder_seconds = decoder, stage.seconds
                        result.converged = result.converged and stage.converged
                    results.append(result)
                rows.append({
                    "method": label, "decoder": decoder if source == "image" else None, "sampler": name,
                    "steps": steps, "guidance": float(guidance), "dtype": str(denoisers[0].dtype).removeprefix("torch."),
                    "image": source == "image", "source": source, "n": n, "prompts": chosen,
                    "options": method.label().partition(":")[2],
                    **_summary(results, noises, latents),
                })
                bar.update()
    bar.close()
    return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """The benchmark's text table."""
    return format_table(rows, COLUMNS)
