"""Benchmark of the decoder inversions: latent NMSE and PSNR against seconds and peak memory.

For each dtype, frame count and iteration count, every method variant inverts the same images (by
default decoded from seeded Gaussian latents, so the true latent is known) in its own measured run.
Two settings of the images: "float", the decodings D(z) as they are (never clipped; the methods run
with ``clipped=False``), and "saved", the same decodings clipped to [-1, 1] and rounded to 8 bits as an
image file holds them (the methods run with the library's default, ``clipped=True``, unless a variant
says otherwise). The result is a list of flat rows (also written as ``{"rows": [...]}`` JSON), one text
table per setting, guidance and frame count, and a Pareto plot of latent NMSE (dB) against seconds.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from diffinv.bench.tables import format_table, write_rows
from diffinv.decoder import check_decoder_name, invert_decoder
from diffinv.decoder.target import clipped_fraction
from diffinv.models.autoencoder import Autoencoder
from diffinv.utils.images import pil_to_tensor, tensor_to_pil
from diffinv.utils.metrics import nmse, psnr, to_db
from diffinv.utils.specs import parse_spec

#: The variants run when `methods` is not given: the paper's comparison (gradient: lr 0.1 scheduled, 0.01 fixed).
#: The image settings: the float decodings, and the decodings as an 8-bit image file holds them.
SETTINGS = ("float", "saved")

DEFAULT_VARIANTS: tuple[str, ...] = (
    "encoder",
    "forward-step",
    "inertial-km",
    "gradient-free",
    "gradient",
    "gradient:lr=0.01,schedule=false",
)


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``"name:key=value,key=value"`` -> (decoder method, options)."""
    name, options = parse_spec(spec)
    if "iterations" in options:
        raise ValueError(f"{spec!r}: give iteration counts through `iterations`, not per variant")
    return check_decoder_name(name), options


def _as_autoencoder(model: Any) -> Autoencoder:
    if isinstance(model, Autoencoder):
        return model
    if hasattr(model, "vae"):
        return Autoencoder.from_pipeline(model)
    if hasattr(model, "decode") and hasattr(model, "config"):
        return Autoencoder(model)
    raise TypeError(f"expected a diffusers pipeline, an AutoencoderKL or an Autoencoder, got {type(model).__name__}")


def _latent_shape(model: Any, autoencoder: Autoencoder, latent_size: int | None) -> tuple[int, int]:
    if latent_size is None:
        unet = getattr(model, "unet", None)
        if unet is not None:
            latent_size = int(unet.config.sample_size)
        else:
            latent_size = int(autoencoder.vae.config.sample_size) // autoencoder.factor
    return int(latent_size), int(autoencoder.vae.config.latent_channels)


def saved_image(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] as an 8-bit file holds them: clipped, rounded (as `diffinv generate` saves) and read back."""
    return torch.stack([pil_to_tensor(frame) for frame in tensor_to_pil(images)]).to(images.device)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_decoder_benchmark(
    pipe_or_autoencoder: Any,
    frames: Sequence[int] = (1, 4, 16),
    iterations: Sequence[int] = (20, 50, 100, 200),
    methods: Sequence[str] | None = None,
    dtype: str | Sequence[str] = "float32",
    out_json: str | Path | None = None,
    out_plot: str | Path | None = None,
    *,
    latents: torch.Tensor | None = None,
    images: torch.Tensor | None = None,
    latent_size: int | None = None,
    sample_prompts: Sequence[str] | None = None,
    video_size: int | None = None,
    sample_steps: int = 50,
    guidance: float | Sequence[float] = 7.5,
    settings: Sequence[str] = ("float",),
    seed: int = 0,
    chunk_size: int | None = None,
    model_name: str | None = None,
    progress: bool = True,
    print_tables: bool = True,
) -> list[dict[str, Any]]:
    """Run every method variant for every dtype x frame count x iteration count; return the rows.

    `methods` are variant specs (`parse_variant`), by default `DEFAULT_VARIANTS`. The images are
    `images` if given (no true latent then: latent_nmse is None), else D(`latents`), else D(z) for
    latents z the pipeline samples from `sample_prompts` (cycled; `sample_steps` steps of the model's
    default sampler through `diffinv.generate`, seed `seed`, one set of latents per `guidance`), else, with `video_size`, D(z) for z = E(frame) of a photo panned by a
    video_size x video_size window (`panning_frames`: images far larger than the model's own, as in the
    paper's SD and video runs), else D(z) for seeded z ~ N(0, I) of the model's latent size; the
    first max(frames) are used. Each of `settings` ("float", "saved") inverts them as they are or as
    a saved 8-bit file (`saved_image`); given `images` are used as they are. "encoder" runs once
    per frame count (iterations 0). "gradient" is skipped for float16 (it would run in float32 anyway).
    Divergent runs are kept as rows with converged False and their reason.
    """
    autoencoder = _as_autoencoder(pipe_or_autoencoder)
    dtypes = [dtype] if isinstance(dtype, str) else list(dtype)
    variants = [parse_variant(spec) for spec in (methods or DEFAULT_VARIANTS)]
    frames = sorted({int(f) for f in frames})
    iterations = sorted({int(n) for n in iterations})
    if not frames or min(frames) < 1 or not iterations or min(iterations) < 1:
        raise ValueError("frames and iterations must be non-empty lists of positive integers")
    name = model_name or str(getattr(getattr(autoencoder.vae, "config", None), "_name_or_path", "") or "autoencoder")
    sources = {"images": images, "latents": latents, "sample_prompts": sample_prompts or None, "video_size": video_size}
    given = [label for label, value in sources.items() if value is not None]
    if len(given) > 1:
        raise ValueError(f"give one source of frames, not {' and '.join(given)}")
    settings = list(dict.fromkeys(settings))
    unknown = [name for name in settings if name not in SETTINGS]
    if not settings or unknown:
        raise ValueError(f"unknown image setting(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SETTINGS)}")
    if images is not None and settings != ["float"]:
        raise ValueError("given images are inverted as they are: settings apply to decoded latents only")
    if int(sample_steps) < 1:
        raise ValueError(f"sample_steps must be at least 1, got {sample_steps}")
    guidances = [float(guidance)] if isinstance(guidance, (int, float)) else [float(g) for g in guidance]
    if not guidances or not all(math.isfinite(g) for g in guidances):
        raise ValueError("guidance must be one or more finite numbers")
    device = autoencoder.device

    # one set of true latents per guidance (sampled) or one set (None) for every other source
    latent_sets: list[tuple[float | None, torch.Tensor | None]] = []
    if sample_prompts:  # one source at most (checked above)
        if not hasattr(pipe_or_autoencoder, "unet"):
            raise ValueError("sample_prompts needs a pipeline, not a bare autoencoder")
        from diffinv.pipeline import generate

        prompts = [sample_prompts[i % len(sample_prompts)] for i in range(max(frames))]
        for g in guidances:
            sampled = generate(pipe_or_autoencoder, prompts, seed=seed, steps=sample_steps, guidance=g, batch_size=len(prompts))
            latent_sets.append((g, sampled.latent.float().cpu()))
        source = "sampled latents"
    elif video_size is not None:
        from diffinv.bench.images import panning_frames

        if int(video_size) % autoencoder.factor:
            raise ValueError(f"video size {video_size} is not a multiple of the autoencoder's factor {autoencoder.factor}")
        frames_in = panning_frames(int(video_size), max(frames))
        with torch.inference_mode():
            latents = torch.cat([autoencoder.encode(f[None].to(device, autoencoder.dtype)) for f in frames_in]).float().cpu()
        source = f"E(panning {video_size}px frames)"
    elif images is None:
        source = "given latents" if latents is not None else "random latents"
    if images is None:
        if latents is None:
            size, channels = _latent_shape(pipe_or_autoencoder, autoencoder, latent_size)
            generator = torch.Generator().manual_seed(seed)
            latents = torch.randn(max(frames), channels, size, size, generator=generator)
        if latents.shape[0] < max(frames):
            raise ValueError(f"{latents.shape[0]} latents for up to {max(frames)} frames")
    elif images.shape[0] < max(frames):
        raise ValueError(f"{images.shape[0]} images for up to {max(frames)} frames")
    else:
        source = "given images"
    if not latent_sets:
        latent_sets.append((None, latents))
    for dt in dtypes:
        if not isinstance(getattr(torch, dt, None), torch.dtype):
            raise ValueError(f"unknown dtype {dt!r}")

    runs_per_set = sum(1 for dt in dtypes for _ in frames for method, _ in variants
                       for _ in ([0] if method == "encoder" else iterations) if not (method == "gradient" and dt == "float16"))
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=runs_per_set * len(latent_sets) * len(settings), desc="decoder benchmark", disable=not progress)
    for dt in dtypes:
        torch_dtype = getattr(torch, dt)
        model = autoencoder if autoencoder.dtype == torch_dtype else Autoencoder(copy.deepcopy(autoencoder.vae).to(torch_dtype))
        for g, set_latents in latent_sets:
            with torch.inference_mode():
                if images is None:
                    truth = set_latents[: max(frames)].to(device, torch_dtype)
                    decoded = torch.cat([model.decode(z[None]) for z in truth]).float()
                else:
                    truth = None
                    decoded = images[: max(frames)].to(device).float()
                model.decode(model.encode(decoded[:1]))  # warm-up outside any measurement
            for setting in settings:
                x_all = decoded if setting == "float" else saved_image(decoded)
                context = {"setting": setting, "guidance": g, "source": source, "model_name": name}
                for count in frames:
                    x = x_all[:count]
                    for method, options in variants:
                        if method == "gradient" and dt == "float16":
                            continue
                        for n in [0] if method == "encoder" else iterations:
                            bar.set_postfix_str(f"{dt} {setting} w={g} frames={count} {_variant_label(method, options)} n={n}")
                            run_options = dict(options, chunk_size=chunk_size, on_divergence="report", progress=False)
                            if setting == "float" and "clipped" not in options:
                                run_options["clipped"] = False  # float decodings were never clipped
                            if method != "encoder":
                                run_options["iterations"] = n
                            with warnings.catch_warnings():
                                warnings.simplefilter("ignore", RuntimeWarning)
                                result = invert_decoder(model, x, method, **run_options)
                            rows.append(_row(model, x, truth, result, method, options, context, count, n))
                            bar.update(1)
    bar.close()

    if print_tables:
        print(format_tables(rows))
    if out_json is not None:
        write_rows(out_json, rows)
    if out_plot is not None:
        plot_pareto(rows, out_plot)
    return rows


def _variant_label(method: str, options: dict[str, Any]) -> str:
    if not options:
        return method
    return method + ":" + ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items())


def _row(
    model: Autoencoder,
    x: torch.Tensor,
    truth: torch.Tensor | None,
    result,
    method: str,
    options: dict[str, Any],
    context: dict[str, Any],
    frames: int,
    iterations: int,
) -> dict[str, Any]:
    saved = context["setting"] == "saved"
    with torch.inference_mode():
        recon = torch.cat([model.decode(z[None]) for z in result.latent]).float()
    if saved:
        recon = recon.clamp(-1, 1)  # what a saved decoding would hold (rounding aside)
    latent_nmse = nmse(result.latent, truth[:frames]) if truth is not None else None
    each = [nmse(z, t) for z, t in zip(result.latent, truth[:frames])] if truth is not None else None
    effective = result.options
    row: dict[str, Any] = {
        "method": _variant_label(method, options),
        "decoder": method,
        "model": context["model_name"],
        "image": context["source"],
        "setting": context["setting"],
        "guidance": context["guidance"],
        "clipped": effective.get("clipped"),
        "rounded": effective.get("rounded"),
        "clipped_fraction": result.clipped_fraction,
        "clipped_fraction_each": [clipped_fraction(frame) for frame in x],
        "dtype": str(model.dtype).removeprefix("torch."),
        "compute_dtype": result.dtype,
        "frames": frames,
        "iterations": iterations,
        "lr": effective.get("lr"),
        "schedule": effective.get("schedule"),
        "step_size": (
            effective.get("rho")
            if method == "forward-step"
            else 2 * effective["lam"] * effective["beta"] if method == "inertial-km" else None
        ),
        "alpha": effective.get("alpha"),
        "latent_nmse": latent_nmse,
        "latent_nmse_db": to_db(latent_nmse) if latent_nmse is not None and math.isfinite(latent_nmse) else None,
        "latent_nmse_db_each": [to_db(v) if math.isfinite(v) else None for v in each] if each is not None else None,
        "psnr": psnr(recon, x),
        "residual": result.residuals[-1] if result.residuals else None,
        "residual_start": result.residuals[0] if result.residuals else None,
        "latent_residual": result.latent_residuals[-1] if result.latent_residuals else None,
        "seconds": result.seconds,
        "peak_memory_bytes": result.peak_memory_bytes,
        "converged": result.converged,
        "reason": result.reason,
        "cocoercivity_min": result.cocoercivity_min,
        "condition_holds": result.condition.holds if result.condition is not None else None,
    }
    return {key: _finite(value) for key, value in row.items()}


#: Columns of the per-frame-count tables.
COLUMNS = [
    ("method", "method", ""), ("compute_dtype", "dtype", ""), ("iterations", "iters", "d"),
    ("latent_nmse_db", "NMSE dB", ".2f"), ("psnr", "PSNR", ".2f"), ("seconds", "seconds", ".3f"),
    ("peak_memory_mb", "peak MB", ".1f"), ("cocoercivity_min", "beta_min", ".3g"), ("condition", "cond", ""),
    ("status", "status", ""),
]


def format_tables(rows: list[dict[str, Any]]) -> str:
    """One text table per setting, guidance, frame count and dtype, rows in run order; saved images list their clipped share."""
    blocks = []
    groups = dict.fromkeys((r.get("setting", "float"), r.get("guidance"), r["frames"], r["dtype"]) for r in rows)
    several = len({(k[0], k[1]) for k in groups}) > 1 or any(k[0] != "float" for k in groups)
    for setting, g, count, dt in groups:
        group = [r for r in rows if (r.get("setting", "float"), r.get("guidance"), r["frames"], r["dtype"]) == (setting, g, count, dt)]
        shown = [
            {
                **r,
                "peak_memory_mb": r["peak_memory_bytes"] / 2**20,
                "condition": {True: "yes", False: "NO", None: None}[r["condition_holds"]],
                "status": "ok" if r["converged"] else "DIVERGED",
            }
            for r in group
        ]
        title = f"decoder inversion, frames={count}, dtype={dt}"
        if several:
            title += f", {setting} images" + (f", guidance {g:g}" if g is not None else "")
        block = format_table(shown, COLUMNS, title=title)
        if setting == "saved" and group[0].get("clipped_fraction_each"):
            block += "\nclipped share per image (values at -1 or 1): " + " ".join(
                f"{100 * v:.1f}%" for v in group[0]["clipped_fraction_each"])
        blocks.append(block)
    legend = "beta_min: smallest cocoercivity ratio seen along the run; cond: the step-size condition of the theory"
    return "\n\n".join(blocks) + "\n" + legend


def plot_pareto(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Latent NMSE (dB; -PSNR when no true latent) against seconds, one panel per frame count, one line per variant and dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted({r["frames"] for r in rows})
    use_nmse = any(r["latent_nmse_db"] is not None for r in rows)
    fig, axes = plt.subplots(1, len(counts), figsize=(5.5 * len(counts), 4.5), squeeze=False)
    for ax, count in zip(axes[0], counts):
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in rows:
            if r["frames"] == count:
                groups.setdefault((r["method"], r["dtype"]), []).append(r)
        for (label, dt), group in groups.items():
            points = []
            for r in sorted(group, key=lambda r: r["iterations"]):
                y = r["latent_nmse_db"] if use_nmse else (-r["psnr"] if r["psnr"] is not None else None)
                if y is not None and r["seconds"] is not None:
                    points.append((r["seconds"], y, r["converged"]))
            if not points:
                continue
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                    linestyle="-" if dt == "float32" else "--", label=f"{label} ({dt})")
            bad = [p for p in points if not p[2]]
            if bad:
                ax.scatter([p[0] for p in bad], [p[1] for p in bad], marker="x", color="red", s=60, zorder=3)
        ax.set_xscale("log")
        ax.set_xlabel("seconds")
        ax.set_ylabel("latent NMSE (dB)" if use_nmse else "-PSNR (dB)")
        ax.set_title(f"{count} frame{'s' if count > 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle("Decoder inversion: error against time (lower left is better; x = diverged)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
