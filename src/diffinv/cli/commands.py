"""`diffinv generate`, `diffinv invert` and `diffinv check-cocoercivity`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from diffinv.cli.common import (
    DEVICE_HELP,
    SEED_BOUNDS,
    DTYPE_HELP,
    MODEL_HELP,
    SAMPLER_HELP,
    DecoderOptions,
    MethodOptions,
    app,
    check_names,
    echo_report,
    read_images,
    save_images,
    save_noise_comparison,
    user_errors,
)
from diffinv.utils.sources import is_dataset
from diffinv.utils.specs import parse_options


@app.command()
def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="text prompt"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder"),
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    seed: int = typer.Option(0, help="seed of the initial noise (same noise as diffusers' Generator().manual_seed)", **SEED_BOUNDS),
    sampler: Optional[str] = typer.Option(None, help=SAMPLER_HELP),
    steps: int = typer.Option(50, help="number of sampling steps"),
    guidance: float = typer.Option(7.5, help="classifier-free guidance scale (1 = none)"),
    negative_prompt: Optional[str] = typer.Option(None, help="negative prompt"),
    num_images: int = typer.Option(1, "--num-images", "-n", min=1, help="images in one batch"),
    height: Optional[int] = typer.Option(None, help="image height (default: the model's)"),
    width: Optional[int] = typer.Option(None, help="image width (default: the model's)"),
    dtype: str = typer.Option("float32", help=DTYPE_HELP),
) -> None:
    """Sample images from seeded noise; write image.png, noise/latent .safetensors and report.json."""
    with user_errors():
        from diffinv.models.denoiser import check_guidance
        from diffinv.models.loading import load
        from diffinv.pipeline import generate as run_generate
        from diffinv.sampler.schedule import check_sampler_name
        from diffinv.utils.outputs import check_writable, save_tensor, staged_folder, write_json

        check_writable(out)
        check_sampler_name(sampler)
        check_guidance(guidance)
        pipe = load(model, dtype=dtype, device=device)
        result = run_generate(
            pipe, prompt, seed=seed, sampler=sampler, steps=steps, guidance=guidance,
            negative_prompt=negative_prompt, batch_size=num_images, height=height, width=width, progress=True,
        )
        report = {"model": model, "dtype": dtype, **result.report}
        with staged_folder(out) as folder:
            save_images(folder, result.images, "image")
            save_tensor(folder / "noise.safetensors", "noise", result.noise)
            save_tensor(folder / "latent.safetensors", "latent", result.latent)
            write_json(folder / "report.json", report)
        echo_report(report)


@app.command()
def invert(
    images: Optional[list[Path]] = typer.Argument(
        None, help="image files (several invert as one batch), or a dataset: a folder, a glob, or a .txt/.jsonl manifest"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder"),
    latent: Optional[Path] = typer.Option(None, help="invert this z_0 (safetensors, key 'latent') instead of images"),
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    prompt: str = typer.Option("", "--prompt", "-p", help="prompt used for inversion (empty for real images)"),
    negative_prompt: Optional[str] = typer.Option(None, help="negative prompt"),
    sampler: Optional[str] = typer.Option(None, help=SAMPLER_HELP),
    steps: int = typer.Option(50, help="number of sampler steps to invert"),
    guidance: float = typer.Option(
        1.0, help="classifier-free guidance scale (1 = none, right for real images; invert a generated image with "
                  "the guidance it was generated with)"),
    method: str = typer.Option("naive", help="sampler inversion method"),
    decoder: str = typer.Option("encoder", help="decoder inversion method"),
    method_option: MethodOptions = None,
    decoder_option: DecoderOptions = None,
    reference: Optional[Path] = typer.Option(None, help="a `diffinv generate` folder: report noise/latent NMSE against it"),
    resize: bool = typer.Option(False, help="resize images to the model's size instead of refusing other sizes"),
    dtype: str = typer.Option("float32", help=DTYPE_HELP),
    batch_size: int = typer.Option(8, help="dataset runs: images per batch (memory is bounded by the batch)"),
    overwrite: bool = typer.Option(False, help="dataset runs: redo images already done with these settings"),
    like: Optional[Path] = typer.Option(
        None, help="repeat the run of this report.json: its model, dtype, prompt, sampler, steps, guidance and the "
                   "whole configuration of both stages replace those options (the same input gives the same noise)"),
) -> None:
    """Recover z_0 and z_T; write noise/latent .safetensors, reconstruction.png and report.json (with
    --reference also noise.png: the true and the recovered noise side by side).

    Given a folder, a glob or a manifest, stream it in batches into OUT/results.jsonl (resumable; under
    accelerate launch or torchrun each process takes its share)."""
    with user_errors():
        from diffinv.models.loading import load
        from diffinv.pipeline import check_latent, latent_shape, reconstruct, score
        from diffinv.pipeline import invert as run_invert
        from diffinv.utils.outputs import check_writable, load_tensor, save_tensor, staged_folder, write_json

        check_writable(out)
        method_options, decoder_options = parse_options(method_option), parse_options(decoder_option)
        if like is not None:
            if method_options or decoder_options:
                raise ValueError("--like repeats a run with its own method options; leave out --method-option and --decoder-option")
            repeated = settings_of_report(like)
            model, dtype, prompt, negative_prompt = repeated["model"], repeated["dtype"], repeated["prompt"], repeated["negative_prompt"]
            sampler, steps, guidance = repeated["sampler"], repeated["steps"], repeated["guidance"]
            method, decoder = repeated["method"], repeated["decoder"]
        check_names(sampler, method, decoder, guidance, method_options)
        if bool(images) == (latent is not None):
            raise ValueError("give image files or --latent, not both and not neither")
        if images and is_dataset(images):
            if reference is not None:
                raise ValueError("--reference compares one generated image; it does not apply to a dataset")
            settings = dict(model=model, dtype=dtype, prompt=prompt, negative_prompt=negative_prompt, sampler=sampler,
                            steps=steps, guidance=guidance, method=method, decoder=decoder,
                            method_options=method_options, decoder_options=decoder_options)
            invert_folder(images, out, settings, batch_size, resize, overwrite, device=device)
            return
        true_noise = true_latent = reference_image = None
        if reference is not None:
            true_noise = load_tensor(reference / "noise.safetensors", "noise")
            true_latent = load_tensor(reference / "latent.safetensors", "latent")
        pipe = load(model, dtype=dtype, device=device)
        kwargs: dict[str, Any] = dict(
            prompt=prompt, negative_prompt=negative_prompt, sampler=sampler, steps=steps, guidance=guidance,
            method=method, decoder=decoder, method_options=method_options, decoder_options=decoder_options, progress=True,
        )
        if images:
            reference_image = read_images(pipe, images, resize)
            given = latent_shape(pipe, reference_image.shape[0], reference_image.shape[-2], reference_image.shape[-1])
        else:
            given_latent = check_latent(pipe, load_tensor(latent, "latent"))
            given = tuple(given_latent.shape)
        for name, truth in (("noise", true_noise), ("latent", true_latent)):
            if truth is not None and tuple(truth.shape) != tuple(given):
                raise ValueError(f"--reference {reference} holds a {name} of shape {list(truth.shape)}, but this run "
                                 f"recovers {list(given)}: it was generated at another size or batch")
        if images:
            result = run_invert(pipe, image=reference_image, **kwargs)
        else:
            result = run_invert(pipe, latent=given_latent, **kwargs)
        reconstruction = reconstruct(pipe, result, prompt, negative_prompt)
        if reference_image is None and reference is not None and (reference / "image.png").is_file():
            reference_image = read_images(pipe, [reference / "image.png"], resize)
        score(result, reconstruction, reference_image, true_noise, true_latent)
        report = {"model": model, "dtype": dtype, "prompt": prompt, "negative_prompt": negative_prompt, **result.report}
        with staged_folder(out) as folder:
            save_tensor(folder / "noise.safetensors", "noise", result.noise)
            save_tensor(folder / "latent.safetensors", "latent", result.latent)
            save_images(folder, reconstruction.images, "reconstruction")
            if true_noise is not None:
                save_noise_comparison(folder / "noise.png", true_noise, result.noise)
            write_json(folder / "report.json", report)
        echo_report(report)


def settings_of_report(path: Path) -> dict[str, Any]:
    """What `invert --like` takes from an earlier run's report.json: the settings and both stages'
    configurations (as instances, so every option is as it was)."""
    import json

    from diffinv.decoder import DECODERS
    from diffinv.inversion import METHODS

    try:
        report = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--like {path}: no such file") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"--like {path}: not a readable report.json ({error.__class__.__name__})") from None
    needed = ("model", "dtype", "sampler", "steps", "guidance", "method_config")
    missing = [key for key in needed if key not in report]
    if missing:
        raise ValueError(f"--like {path}: not a diffinv invert report (no {', '.join(missing)})")
    decoder = report.get("decoder_config") or report.get("decoder") or "encoder"
    return {
        "model": report["model"], "dtype": report["dtype"], "prompt": report.get("prompt", ""),
        "negative_prompt": report.get("negative_prompt"), "sampler": report["sampler"], "steps": int(report["steps"]),
        "guidance": float(report["guidance"]), "method": METHODS.from_dict(report["method_config"]),
        "decoder": DECODERS.from_dict(decoder) if isinstance(decoder, dict) else decoder,
    }


def invert_folder(sources: list[Path], out: Path, settings: dict[str, Any], batch_size: int, resize: bool,
                  overwrite: bool, exit_on_failure: bool = True, check_model=None, device: str | None = None):
    """The dataset form of `invert`: stream, resume, shard; each failure named and a summary line on stderr;
    exit 1 if any image failed. `check_model(pipe)` refuses, before any work, what does not fit the loaded
    model. Returns the run's summary on the main process (None on the others)."""
    from diffinv.applications.dataset import Distribution, collect, invert_dataset
    from diffinv.models.loading import load

    items = collect(sources)
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    distribution = Distribution.detect()
    pipe = load(settings["model"], dtype=settings["dtype"], device=device)
    if check_model is not None:
        check_model(pipe)
    if distribution.device.startswith("cuda"):
        pipe.to(distribution.device)  # each process on its own GPU
    summary = invert_dataset(pipe, items, out, settings, batch_size=batch_size, resize=resize, overwrite=overwrite,
                             distribution=distribution)
    if distribution.main:
        failures = [r for r in summary.records if r.get("status") != "ok"]
        for record in failures:
            typer.echo(f"failed: {record.get('error') or record['path']}", err=True)
        failed = len(failures)
        typer.echo(f"{len(summary.records) - failed} of {len(items)} images done, {failed} failed; "
                   f"this run: {summary.line()}; results in {summary.results}", err=True)
        if failed and exit_on_failure:
            raise typer.Exit(1)
        return summary
    return None


@app.command("check-cocoercivity")
def check_cocoercivity_command(
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    step_size: float = typer.Option(0.5, help="the forward step's rho (or 2 lambda beta for inertial KM) to check"),
    alpha: float = typer.Option(0.0, help="inertia of the iterates (0 = forward step)"),
    n: int = typer.Option(4, "--n", min=1, help="latents to measure at"),
    prompt: Optional[str] = typer.Option(
        None, "--prompt", "-p",
        help="measure at the model's own samples of this prompt (DDIM-50, guidance 7.5; seeds SEED..SEED+n-1), "
             "where the sampler puts its latents; default: seeded Gaussian latents, which it never produces"),
    iterations: int = typer.Option(20, min=1, help="iterates to measure along"),
    seed: int = typer.Option(0, help="seed of the latents", **SEED_BOUNDS),
) -> None:
    """Estimate <T z' - T z, z' - z> / ||T z' - T z||^2 along the iterates and check the step size."""
    with user_errors():
        import torch

        from diffinv.decoder.cocoercivity import check_cocoercivity
        from diffinv.models.autoencoder import Autoencoder
        from diffinv.models.loading import load
        from diffinv.pipeline import generate, latent_shape, seeded_noise

        pipe = load(model, device=device)
        if prompt is None:
            latents = torch.randn(latent_shape(pipe, n), generator=torch.Generator().manual_seed(seed))
        else:
            noise = torch.cat([seeded_noise(pipe, seed + index) for index in range(n)])
            latents = generate(pipe, prompt, noise=noise, steps=50, guidance=7.5, progress=True).latent
        check = check_cocoercivity(Autoencoder.from_pipeline(pipe), latents, step_size, iterations=iterations, alpha=alpha, progress=True)
        typer.echo(check.summary())
