"""The `diffinv` command: generate, invert, and the benchmarks."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import typer

from diffinv.specs import parse_options, split_specs

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Find the noise and the latent behind an image for latent diffusion models.",
)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print one table and write JSON.")
app.add_typer(bench_app, name="bench")
watermark_app = typer.Typer(no_args_is_help=True, help="Tree-Ring watermarks: embed in the noise, detect through inversion.")
app.add_typer(watermark_app, name="watermark")

MODEL_HELP = "'tiny' (bundled), a local diffusers folder, or a hub id"
DTYPE_HELP = "float32 or float16: the dtype the model's weights run in (latents stay float32)"


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause into a one-line message and exit status 2."""
    from diffinv.decoder_inversion import DecoderInversionDiverged
    from diffinv.images import ImageError
    from diffinv.inversion import InversionDiverged
    from diffinv.loading import ModelNotFoundError

    try:
        yield
    except (
        ImageError, ModelNotFoundError, InversionDiverged, DecoderInversionDiverged, FloatingPointError, FileNotFoundError,
        KeyError, ValueError,
    ) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2) from None


def split_list(text: str) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c'] (empty items dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def whole_numbers(text: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16], with a clear error for anything else."""
    try:
        return [int(item) for item in split_list(text)]
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of whole numbers") from None


def emit_rows(table: str, rows: list[dict[str, Any]], json_path: Path | None, model: str) -> None:
    """Print a benchmark's table; with --json also write its rows, each tagged with the model."""
    from diffinv.bench.tables import write_rows

    typer.echo(table)
    if json_path:
        write_rows(json_path, [{"model": model, **row} for row in rows])


def echo_report(report: dict[str, Any]) -> None:
    """Print the report as JSON; the per-step residual list stays in report.json only."""
    typer.echo(json.dumps({key: value for key, value in report.items() if key != "step_residuals"}, indent=2))


def image_names(count: int, stem: str) -> list[str]:
    """`stem.png` for one image, `stem_0.png`, `stem_1.png`, ... for a batch."""
    return [f"{stem}.png"] if count == 1 else [f"{stem}_{index}.png" for index in range(count)]


def save_images(folder: Path, images, stem: str) -> None:
    for name, image in zip(image_names(len(images), stem), images):
        image.save(folder / name)


def check_names(scheduler: str, method: str, decoder: str) -> None:
    """Refuse unknown scheduler, method or decoder names before any model is loaded."""
    from diffinv.decoder_inversion import check_decoder_name
    from diffinv.inversion import check_method_name
    from diffinv.schedule import check_scheduler_name

    check_scheduler_name(scheduler)
    check_method_name(method)
    check_decoder_name(decoder)


def read_images(pipe, paths: list[Path], resize: bool):
    """Image files as one batch for `pipe` (notes about conversions go to stderr)."""
    from diffinv.images import load_images

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    loaded = load_images(paths, pipe.vae_scale_factor, size=(size, size), resize=resize)
    for note in loaded.notes:
        typer.echo(f"note: {note}", err=True)
    return loaded.tensor


@app.command()
def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="text prompt"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder"),
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    seed: int = typer.Option(0, help="seed of the initial noise (same noise as diffusers' Generator().manual_seed)"),
    scheduler: str = typer.Option("ddim", help="ddim, dpm++1, dpm++2m or dpm++3m"),
    steps: int = typer.Option(50, help="number of sampling steps"),
    guidance: float = typer.Option(7.5, help="classifier-free guidance scale (1 = none)"),
    negative_prompt: Optional[str] = typer.Option(None, help="negative prompt"),
    num_images: int = typer.Option(1, "--num-images", "-n", help="images in one batch"),
    height: Optional[int] = typer.Option(None, help="image height (default: the model's)"),
    width: Optional[int] = typer.Option(None, help="image width (default: the model's)"),
    dtype: str = typer.Option("float32", help=DTYPE_HELP),
) -> None:
    """Sample images from seeded noise; write image.png, noise/latent .safetensors and report.json."""
    with user_errors():
        from diffinv.loading import load
        from diffinv.outputs import save_tensor, staged_folder, write_json
        from diffinv.pipeline import generate as run_generate
        from diffinv.schedule import check_scheduler_name

        check_scheduler_name(scheduler)
        pipe = load(model, dtype=dtype)
        result = run_generate(
            pipe, prompt, seed=seed, scheduler=scheduler, steps=steps, guidance=guidance,
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
    images: Optional[list[Path]] = typer.Argument(None, help="image files (several invert as one batch)"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder"),
    latent: Optional[Path] = typer.Option(None, help="invert this z_0 (safetensors, key 'latent') instead of images"),
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    prompt: str = typer.Option("", "--prompt", "-p", help="prompt used for inversion (empty for real images)"),
    negative_prompt: Optional[str] = typer.Option(None, help="negative prompt"),
    scheduler: str = typer.Option("ddim", help="ddim, dpm++1, dpm++2m or dpm++3m"),
    steps: int = typer.Option(50, help="number of sampler steps to invert"),
    guidance: float = typer.Option(7.5, help="classifier-free guidance scale (1 = none)"),
    method: str = typer.Option("naive", help="sampler inversion method"),
    decoder: str = typer.Option("encoder", help="decoder inversion method"),
    method_option: Optional[list[str]] = typer.Option(None, "--method-option", help="KEY=VALUE for the method, repeatable"),
    decoder_option: Optional[list[str]] = typer.Option(None, "--decoder-option", help="KEY=VALUE for the decoder, repeatable"),
    reference: Optional[Path] = typer.Option(None, help="a `diffinv generate` folder: report noise/latent NMSE against it"),
    resize: bool = typer.Option(False, help="resize images to the model's size instead of refusing other sizes"),
    dtype: str = typer.Option("float32", help=DTYPE_HELP),
) -> None:
    """Recover z_0 and z_T; write noise/latent .safetensors, reconstruction.png and report.json."""
    with user_errors():
        from diffinv.loading import load
        from diffinv.outputs import load_tensor, save_tensor, staged_folder, write_json
        from diffinv.pipeline import invert as run_invert
        from diffinv.pipeline import reconstruct, score

        check_names(scheduler, method, decoder)
        if bool(images) == (latent is not None):
            raise ValueError("give image files or --latent, not both and not neither")
        method_options, decoder_options = parse_options(method_option), parse_options(decoder_option)
        true_noise = true_latent = reference_image = None
        if reference is not None:
            true_noise = load_tensor(reference / "noise.safetensors", "noise")
            true_latent = load_tensor(reference / "latent.safetensors", "latent")
        pipe = load(model, dtype=dtype)
        kwargs: dict[str, Any] = dict(
            prompt=prompt, negative_prompt=negative_prompt, scheduler=scheduler, steps=steps, guidance=guidance,
            method=method, decoder=decoder, method_options=method_options, decoder_options=decoder_options, progress=True,
        )
        if images:
            reference_image = read_images(pipe, images, resize)
            result = run_invert(pipe, image=reference_image, **kwargs)
        else:
            result = run_invert(pipe, latent=load_tensor(latent, "latent"), **kwargs)
        reconstruction = reconstruct(pipe, result, prompt, negative_prompt)
        if reference_image is None and reference is not None and (reference / "image.png").is_file():
            reference_image = read_images(pipe, [reference / "image.png"], resize)
        score(result, reconstruction, reference_image, true_noise, true_latent)
        report = {"model": model, "dtype": dtype, **result.report}
        with staged_folder(out) as folder:
            save_tensor(folder / "noise.safetensors", "noise", result.noise)
            save_tensor(folder / "latent.safetensors", "latent", result.latent)
            save_images(folder, reconstruction.images, "reconstruction")
            write_json(folder / "report.json", report)
        echo_report(report)


@watermark_app.command("embed")
def watermark_embed(
    prompt: str = typer.Option(..., "--prompt", "-p", help="text prompt"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder"),
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    key: Optional[Path] = typer.Option(None, help="reuse this key file (default: make a new one, saved as OUT/key.safetensors)"),
    seed: int = typer.Option(0, help="seed of the initial noise"),
    key_seed: int = typer.Option(0, help="seed of a new key"),
    channel: int = typer.Option(-1, help="latent channel that carries a new key (Tree-Ring: the last)"),
    radius: Optional[int] = typer.Option(None, help="radius of a new key in the latent's Fourier plane (default: 10 at 64x64, scaled)"),
    pattern: str = typer.Option("ring", help="ring, rand or zeros"),
    scheduler: str = typer.Option("ddim", help="ddim, dpm++1, dpm++2m or dpm++3m"),
    steps: int = typer.Option(50, help="number of sampling steps"),
    guidance: float = typer.Option(7.5, help="classifier-free guidance scale"),
) -> None:
    """Generate an image whose initial noise carries a Tree-Ring key; write image, key, noise, report."""
    with user_errors():
        from diffinv.loading import load
        from diffinv.outputs import save_tensor, staged_folder, write_json
        from diffinv.pipeline import latent_shape
        from diffinv.schedule import check_scheduler_name
        from diffinv.watermark import WatermarkKey, generate_watermarked, make_key

        check_scheduler_name(scheduler)
        pipe = load(model)
        shape = latent_shape(pipe, 1)[1:]
        the_key = WatermarkKey.load(key) if key else make_key(shape, channel, radius, pattern, key_seed)
        result = generate_watermarked(pipe, prompt, the_key, seed=seed, scheduler=scheduler, steps=steps, guidance=guidance, progress=True)
        report = {"model": model, **result.report, "key": {"channel": the_key.channel, "radius": the_key.radius, "pattern": the_key.kind, "seed": the_key.seed}}
        with staged_folder(out) as folder:
            save_images(folder, result.images, "image")
            the_key.save(folder / "key.safetensors")
            save_tensor(folder / "noise.safetensors", "noise", result.noise)
            save_tensor(folder / "latent.safetensors", "latent", result.latent)
            write_json(folder / "report.json", report)
        echo_report(report)


@watermark_app.command("detect")
def watermark_detect(
    images: list[Path] = typer.Argument(..., help="image files"),
    key: Path = typer.Option(..., help="key file written by `watermark embed`"),
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    prompt: str = typer.Option("", "--prompt", "-p", help="prompt for inversion (Tree-Ring: empty)"),
    scheduler: str = typer.Option("ddim", help="sampler to invert"),
    steps: int = typer.Option(50, help="number of steps to invert"),
    guidance: float = typer.Option(1.0, help="guidance used for inversion (Tree-Ring: 1)"),
    method: str = typer.Option("naive", help="sampler inversion method"),
    decoder: str = typer.Option("encoder", help="decoder inversion method"),
    method_option: Optional[list[str]] = typer.Option(None, "--method-option", help="KEY=VALUE for the method, repeatable"),
    decoder_option: Optional[list[str]] = typer.Option(None, "--decoder-option", help="KEY=VALUE for the decoder, repeatable"),
    attack: str = typer.Option("clean", help="attack the images first: jpeg[:q], rotation[:deg], crop[:keep], blur[:r], noise[:std], brightness[:f]"),
    threshold: float = typer.Option(0.01, help="p-value below which an image is called watermarked"),
    resize: bool = typer.Option(False, help="resize images to the model's size"),
) -> None:
    """Invert images to their noise and print, per image, the distance to the key and a p-value."""
    with user_errors():
        import torch

        from diffinv.attacks import apply_attack, check_attack
        from diffinv.images import pil_to_tensor, tensor_to_pil
        from diffinv.loading import load
        from diffinv.watermark import WatermarkKey, detect

        check_names(scheduler, method, decoder)
        check_attack(attack)
        the_key = WatermarkKey.load(key)
        pipe = load(model)
        attacked = [pil_to_tensor(apply_attack(image, attack)) for image in tensor_to_pil(read_images(pipe, images, resize))]
        found = detect(pipe, torch.stack(attacked), the_key, prompt=prompt, scheduler=scheduler, steps=steps,
                       guidance=guidance, method=method, decoder=decoder, method_options=parse_options(method_option),
                       decoder_options=parse_options(decoder_option), progress=True)
        rows = [{"image": str(path), "attack": attack, **row} for path, row in zip(images, found.report(threshold))]
        echo_report({"model": model, "images": rows, "inversion": found.inversion.report})


@bench_app.command("watermark")
def bench_watermark(
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    n: int = typer.Option(8, "--n", help="images per class (clean, and each of 3 keys)"),
    pipelines: str = typer.Option(",".join(("encoder+naive", "gradient+naive", "gradient-free+naive", "gradient-free+exact")),
                                  help="comma-separated DECODER+METHOD inversion pipelines"),
    attacks: str = typer.Option("clean,jpeg,rotation,crop,blur,noise,brightness", help="comma-separated attacks (name or name:strength)"),
    scheduler: str = typer.Option("ddim", help="sampler used to generate and to invert"),
    steps: int = typer.Option(50, help="sampler steps"),
    generation_guidance: float = typer.Option(7.5, help="guidance when generating"),
    inversion_guidance: float = typer.Option(1.0, help="guidance when inverting (Tree-Ring: 1, empty prompt)"),
    known_prompt: bool = typer.Option(False, help="invert with each image's prompt and the generation guidance"),
    seed: int = typer.Option(0, help="seed of noises and keys"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write {\"rows\": [...]} here"),
) -> None:
    """Tree-Ring detection (AUC, TPR@1%FPR) and 3-key attribution per inversion pipeline, clean and attacked."""
    with user_errors():
        from diffinv.bench.watermark import format_watermark_tables, parse_pipeline, run_watermark_benchmark
        from diffinv.loading import load

        pipeline_list = split_list(pipelines)
        for spec in pipeline_list:
            parse_pipeline(spec)
        pipe = load(model)
        rows = run_watermark_benchmark(
            pipe, n=n, pipelines=pipeline_list, attacks=split_list(attacks),
            scheduler=scheduler, steps=steps, generation_guidance=generation_guidance,
            inversion_guidance=inversion_guidance, known_prompt=known_prompt, seed=seed,
        )
        emit_rows(format_watermark_tables(rows), rows, json_path, model)


@bench_app.command("reconstruction")
def bench_reconstruction(
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    images: Optional[str] = typer.Option(
        None, help="comma-separated: a folder of images, 'skimage' (scikit-image's photos), 'white' (white-area test images)"
    ),
    generated: int = typer.Option(0, "--generated", help="also invert N images the model generates (seeds 0..N-1)"),
    methods: Optional[str] = typer.Option(
        None, help="comma-separated method specs, e.g. naive,easyinv:eta=0.8,order=code,renoise (default: every registered "
        "one of naive, easyinv, fixed-point, renoise, exact)"
    ),
    scheduler: str = typer.Option("ddim", help="sampler to invert and regenerate with"),
    steps: int = typer.Option(50, help="sampler steps"),
    guidance: float = typer.Option(1.0, help="guidance when inverting and regenerating"),
    prompt: str = typer.Option("", "--prompt", "-p", help="prompt when inverting and regenerating"),
    image_prompts: bool = typer.Option(False, help="invert each generated image with its own prompt instead"),
    dtype: str = typer.Option("float32", help="float32, float16, or both comma-separated (one run each)"),
    repeats: int = typer.Option(1, help="time each inversion this many times and keep the fastest"),
    per_image: bool = typer.Option(False, help="also print every image's row"),
    json_path: Optional[Path] = typer.Option(None, "--json", help='write {"rows": [...]} here'),
) -> None:
    """Invert real (and generated) images, regenerate them, and compare: PSNR, SSIM, LPIPS, NFE, seconds."""
    with user_errors():
        from diffinv.bench.images import generated_images, image_sources
        from diffinv.bench.reconstruction import (
            load_lpips, parse_method, report, run_reconstruction_benchmark, write_benchmark_json,
        )
        from diffinv.loading import load, parse_dtype
        from diffinv.schedule import check_scheduler_name

        check_scheduler_name(scheduler)
        specs = split_specs(methods) if methods else None
        for spec in specs or []:
            parse_method(spec)
        dtypes = split_list(dtype)
        for name in dtypes:
            parse_dtype(name)
        if not images and generated < 1:
            raise ValueError("give --images (a folder, 'skimage' or 'white') and/or --generated N")
        lpips_metric, lpips_note = load_lpips()
        rows: list[dict[str, Any]] = []
        bench_images = None
        for name in dtypes:
            pipe = load(model, dtype=name)
            if bench_images is None:
                size = pipe.unet.config.sample_size * pipe.vae_scale_factor
                bench_images = image_sources(images, size) if images else []
                if generated > 0:
                    bench_images += generated_images(pipe, generated, scheduler=scheduler, steps=steps)
            rows += run_reconstruction_benchmark(
                pipe, bench_images, specs, scheduler=scheduler, steps=steps, guidance=guidance,
                prompt=None if image_prompts else prompt,
                repeats=repeats, model_name=model, lpips_metric=lpips_metric,
            )
        typer.echo(report(rows, lpips_note, per_image=per_image))
        if json_path:
            write_benchmark_json(json_path, rows, lpips_note)

@bench_app.command("sampler-inversion")
def bench_sampler_inversion(
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    n: int = typer.Option(4, "--n", help="latents (seeds SEED..SEED+N-1) per sampler and guidance"),
    schedulers: str = typer.Option("ddim:50,dpm++2m:10", help="comma-separated NAME:STEPS"),
    guidances: str = typer.Option("1,3,7.5", help="comma-separated guidance scales"),
    methods: str = typer.Option("naive,fixed-point,exact,exact-gd,exact-aa",
                                help="comma-separated: naive, fixed-point, exact, exact-gd, exact-aa, or any registered method"),
    tol: float = typer.Option(1e-5, help="per-step relative tolerance of the iterative methods"),
    prompt: str = typer.Option("a red circle on a blue background", "--prompt", "-p", help="prompt to generate and invert with"),
    image: bool = typer.Option(False, "--image", help="also invert from the decoded image (decoder inversion first)"),
    decoder: str = typer.Option("gradient", help="decoder inversion for --image"),
    dtype: str = typer.Option("float32", help="model dtype"),
    seed: int = typer.Option(0, help="seed of the first noise"),
    json_path: Optional[Path] = typer.Option(None, "--json", help='write {"rows": [...]} here'),
) -> None:
    """Invert samples of known noise with every method: noise/latent NMSE, NFE, seconds, peak memory."""
    with user_errors():
        from diffinv.bench.sampler import format_rows, parse_schedulers, resolve_method, run_sampler_benchmark
        from diffinv.decoder_inversion import check_decoder_name
        from diffinv.loading import load

        scheduler_list = parse_schedulers(schedulers)
        try:
            guidance_list = [float(value) for value in split_list(guidances)]
        except ValueError:
            raise ValueError(f"{guidances!r} is not a comma-separated list of numbers") from None
        method_list = split_specs(methods)
        for label in method_list:
            resolve_method(label, tol)
        if image:
            check_decoder_name(decoder)
        if n < 1:
            raise ValueError(f"--n must be at least 1, got {n}")
        pipe = load(model, dtype=dtype)
        rows = run_sampler_benchmark(
            pipe, n=n, schedulers=scheduler_list, guidances=guidance_list, methods=method_list, prompt=prompt,
            seed=seed, tol=tol, image=image, decoder=decoder,
        )
        emit_rows(format_rows(rows), rows, json_path, model)


@bench_app.command("decoder-inversion")
def bench_decoder_inversion(
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    frames: str = typer.Option("1,4,16", help="comma-separated frame counts (one table each)"),
    iterations: str = typer.Option("20,50,100,200", help="comma-separated iteration counts"),
    methods: Optional[str] = typer.Option(None, help="comma-separated variants, e.g. 'gradient-free,gradient:lr=0.01,schedule=false' (default: the paper's set)"),
    dtypes: str = typer.Option("float32", "--dtype", help="float32, float16 or both (comma-separated)"),
    prompts: str = typer.Option("", help="sample the true latents from these prompts ('|'-separated); default: seeded Gaussian latents"),
    video_size: Optional[int] = typer.Option(None, help="frames: a SIZE x SIZE window panning across a photo, true latents E(frame) (instead of --prompts)"),
    chunk_size: Optional[int] = typer.Option(None, help="frames per chunk (bounds memory)"),
    seed: int = typer.Option(0, help="seed of the latents"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write {\"rows\": [...]} here"),
    plot: Optional[Path] = typer.Option(None, help="write the NMSE-against-time (Pareto) plot here (PNG)"),
) -> None:
    """Decoder inversion methods on frames decoded from known latents: NMSE, PSNR, seconds, peak memory."""
    with user_errors():
        from diffinv.bench.decoder import run_decoder_benchmark
        from diffinv.loading import load

        variants = split_specs(methods) if methods else None
        pipe = load(model)
        run_decoder_benchmark(
            pipe, frames=whole_numbers(frames), iterations=whole_numbers(iterations), methods=variants,
            dtype=split_list(dtypes), out_json=json_path, out_plot=plot, model_name=model,
            sample_prompts=[p for p in prompts.split("|") if p] or None, chunk_size=chunk_size, seed=seed,
            video_size=video_size,
        )


@app.command("check-cocoercivity")
def check_cocoercivity_command(
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    step_size: float = typer.Option(0.5, help="the forward step's rho (or 2 lambda beta for inertial KM) to check"),
    alpha: float = typer.Option(0.0, help="inertia of the iterates (0 = forward step)"),
    n: int = typer.Option(4, "--n", help="sample latents (seeded Gaussian)"),
    iterations: int = typer.Option(20, help="iterates to measure along"),
    seed: int = typer.Option(0, help="seed of the latents"),
) -> None:
    """Estimate <T z' - T z, z' - z> / ||T z' - T z||^2 along the iterates and check the step size."""
    with user_errors():
        import torch

        from diffinv.autoencoder import Autoencoder
        from diffinv.cocoercivity import check_cocoercivity
        from diffinv.loading import load
        from diffinv.pipeline import latent_shape

        pipe = load(model)
        latents = torch.randn(latent_shape(pipe, n), generator=torch.Generator().manual_seed(seed))
        check = check_cocoercivity(Autoencoder.from_pipeline(pipe), latents, step_size, iterations=iterations, alpha=alpha, progress=True)
        typer.echo(check.summary())


def quiet_libraries() -> None:
    """Keep the terminal for diffinv's own progress bars and report: no loader chatter from the libraries."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import diffusers.utils.logging
    import transformers.utils.logging

    for library in (diffusers.utils.logging, transformers.utils.logging):
        library.set_verbosity_error()
        library.disable_progress_bar()


def main() -> None:
    """Console entry point."""
    quiet_libraries()
    app(prog_name="diffinv")


if __name__ == "__main__":
    sys.exit(main())
