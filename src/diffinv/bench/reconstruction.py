"""Real-image reconstruction benchmark: image -> E(x) = z_0 -> sampler inversion -> z_T -> sample -> D -> image.

Every method inverts the same encoder latent of each image with the same prompt (empty by default),
guidance (1 by default), sampler and steps; the image regenerated from the recovered noise is compared
with the input (PSNR, SSIM, and LPIPS when its weights are on the machine). Each method's row also has
its network calls, the inversion's seconds (the fastest of `repeats` runs) and peak memory. A run that
diverges (NaN or blown-up latents) is a row with its error and no metrics, never a scored image.
An "autoencoder" row per image gives D(E(x)) against x: the ceiling any sampler inversion can reach.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from diffinv.bench.images import BenchImage
from diffinv.bench.methods import resolve_method
from diffinv.bench.tables import Column, format_table, write_rows
from diffinv.inversion import METHODS, InversionDiverged, invert_sampler
from diffinv.models.autoencoder import Autoencoder
from diffinv.models.denoiser import Denoiser, network_of
from diffinv.pipeline import pipeline_schedule
from diffinv.sampler.sampling import sample
from diffinv.sampler.schedule import check_sampler_name
from diffinv.utils.metrics import psnr, ssim

#: The methods the benchmark runs by default, those of them that are registered.
DEFAULT_METHODS: tuple[str, ...] = ("naive", "easyinv", "fixed-point", "renoise", "exact")
AUTOENCODER = "autoencoder"

SUMMARY_COLUMNS: list[Column] = [
    ("set", "set", ""),
    ("method", "method", ""),
    ("dtype", "dtype", ""),
    ("images", "images", "d"),
    ("psnr", "PSNR", ".3f"),
    ("ssim", "SSIM", ".4f"),
    ("lpips", "LPIPS", ".4f"),
    ("nfe", "NFE", ".0f"),
    ("seconds", "s/image", ".3f"),
    ("recon_mean", "mean px", ".3f"),
    ("failed", "failed", "d"),
]
IMAGE_COLUMNS: list[Column] = [
    ("image", "image", ""),
    ("method", "method", ""),
    ("dtype", "dtype", ""),
    ("psnr", "PSNR", ".3f"),
    ("ssim", "SSIM", ".4f"),
    ("nfe", "NFE", "d"),
    ("seconds", "seconds", ".3f"),
    ("image_mean", "input px", ".3f"),
    ("recon_mean", "recon px", ".3f"),
    ("error", "error", ""),
]


def default_methods() -> list[str]:
    """DEFAULT_METHODS that are registered here."""
    return [name for name in DEFAULT_METHODS if name in METHODS]


def load_lpips() -> tuple[Callable[[torch.Tensor, torch.Tensor], float] | None, str]:
    """(LPIPS(a, b) on [-1, 1] images, "lpips (alex)") when the package and its backbone weights are local,
    else (None, why not). Never downloads."""
    try:
        import lpips
    except ImportError:
        return None, "the lpips package is not installed"
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    if not any(hub.glob("alexnet-*.pth")):
        return None, f"torchvision's pretrained AlexNet (which lpips needs) is not in {hub}"
    model = lpips.LPIPS(net="alex", verbose=False).eval()

    def distance(image: torch.Tensor, reference: torch.Tensor) -> float:
        with torch.inference_mode():
            return float(model(image.float().cpu(), reference.float().cpu()).mean())

    return distance, "lpips (alex)"


def _dtype_name(pipe) -> str:
    return str(network_of(pipe).dtype).removeprefix("torch.")


def _pixel_mean(image: torch.Tensor) -> float:
    return float(((image.float().clamp(-1, 1) + 1) / 2).mean())


def run_reconstruction_benchmark(
    pipe,
    images: Sequence[BenchImage],
    methods: Sequence[str] | None = None,
    sampler: str | None = None,
    steps: int = 50,
    guidance: float = 1.0,
    prompt: str | None = "",
    repeats: int = 1,
    model_name: str | None = None,
    lpips_metric: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Invert and regenerate every image with every method spec (`bench.methods.resolve_method`); one flat row per (image, method).

    Rows: method (the spec), model, sampler, steps, guidance, dtype, prompt, decoder, image, set, psnr,
    ssim, lpips, nfe, seconds (inversion only, fastest of `repeats`), peak_memory_bytes, converged,
    error, image_mean / recon_mean (mean pixel in [0, 1]: a black reconstruction shows as ~0).
    `prompt=None` inverts and regenerates each image with its own prompt (generated images; "" for others).
    """
    check_sampler_name(sampler)
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    specs = list(methods) if methods else default_methods()
    parsed = [(spec, resolve_method(spec)) for spec in specs]
    schedule = pipeline_schedule(pipe, sampler, steps)
    autoencoder = Autoencoder.from_pipeline(pipe)
    device = network_of(pipe).device
    base = {
        "model": model_name, "sampler": schedule.name, "steps": steps, "guidance": float(guidance),
        "dtype": _dtype_name(pipe), "decoder": "encoder",
    }
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(images) * (len(parsed) + 1), desc="reconstruction benchmark", disable=not progress)
    for item in images:
        x = item.image[None].to(device)
        text = (item.prompt or "") if prompt is None else prompt
        denoiser = Denoiser.from_pipeline(pipe, text, 1, guidance, schedule.prediction_type)
        with torch.inference_mode():
            latent = autoencoder.encode(x).float()
            decoded = autoencoder.decode(latent).float().clamp(-1, 1)
            denoiser.output(latent, schedule.steps[0].timestep)  # warm-up outside any timing
        common = {**base, "prompt": text, "image": item.name, "set": item.group, "image_mean": _pixel_mean(x)}
        rows.append(_scored({**common, "method": AUTOENCODER, "nfe": 0, "seconds": None, "peak_memory_bytes": None, "converged": True}, decoded, x, lpips_metric))
        bar.update(1)
        for spec, method in parsed:
            bar.set_postfix_str(f"{item.name} {spec}")
            row = {**common, "method": spec}
            try:
                runs = [invert_sampler(denoiser, schedule, latent, method) for _ in range(repeats)]
                result = min(runs, key=lambda run: run.seconds)
                with torch.inference_mode():
                    regenerated = sample(denoiser, schedule, result.noise).final
                    reconstruction = autoencoder.decode(regenerated).float().clamp(-1, 1)
                row.update(nfe=result.nfe, seconds=result.seconds, peak_memory_bytes=result.peak_memory_bytes,
                           converged=result.converged)
                rows.append(_scored(row, reconstruction, x, lpips_metric))
            except (InversionDiverged, FloatingPointError) as error:
                rows.append({**row, "converged": False, "error": str(error)})
            bar.update(1)
    bar.close()
    return rows


def _scored(row: dict[str, Any], reconstruction: torch.Tensor, image: torch.Tensor, lpips_metric) -> dict[str, Any]:
    return {
        **row,
        "psnr": psnr(reconstruction, image),
        "ssim": ssim(reconstruction, image),
        "lpips": lpips_metric(reconstruction, image) if lpips_metric is not None else None,
        "recon_mean": _pixel_mean(reconstruction),
        "error": None,
    }


def _mean(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (set, method, dtype): the mean of each metric over the images that did not fail, and the failures."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["set"], row["method"], row["dtype"]), []).append(row)
    summary = []
    for (group, method, dtype), members in groups.items():
        ok = [row for row in members if not row.get("error")]
        summary.append({
            "set": group, "method": method, "dtype": dtype, "images": len(members), "failed": len(members) - len(ok),
            **{key: _mean([row.get(key) for row in ok]) for key in ("psnr", "ssim", "lpips", "nfe", "seconds", "recon_mean")},
        })
    return summary


def report(rows: Sequence[dict[str, Any]], lpips_note: str, per_image: bool = False) -> str:
    """The text the CLI prints: the per-set means (and every row with `per_image`), the LPIPS status, failures."""
    first = rows[0] if rows else {}
    title = (f"reconstruction: {first.get('model')}, {first.get('sampler')} {first.get('steps')} steps, "
             f"guidance {first.get('guidance')}, prompts {sorted({row.get('prompt') for row in rows})!r}")
    tables = [format_table(summarize(rows), SUMMARY_COLUMNS, title)]
    if per_image:
        tables.append(format_table(rows, IMAGE_COLUMNS, "per image"))
    notes = [f"lpips: {lpips_note}"]
    notes += [f"failed: {row['method']} on {row['image']} ({row['dtype']}): {row['error']}" for row in rows if row.get("error")]
    return "\n\n".join(tables) + "\n\n" + "\n".join(notes)


def write_benchmark_json(path: str | Path, rows: Sequence[dict[str, Any]], lpips_note: str) -> Path:
    """`{"rows": [...], "lpips": note}` at `path`."""
    return write_rows(path, rows, lpips=lpips_note)
