"""`diffinv bench ...`: each benchmark prints one table and writes its rows as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from diffinv.cli.common import (
    DEVICE_HELP,
    SEED_BOUNDS,
    JsonOutput,
    MODEL_HELP,
    SAMPLER_HELP,
    bench_app,
    emit_rows,
    finite_numbers,
    split_list,
    user_errors,
    whole_numbers,
    writable_file,
)
from diffinv.utils.specs import split_specs


def sampler_grid(samplers: str, guidances: str, n: int) -> tuple[list[tuple[str, int]], list[float]]:
    """--samplers NAME:STEPS,... and --guidances W,... parsed and checked, with --n at least 1."""
    from diffinv.sampler.schedule import parse_samplers

    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    return parse_samplers(samplers), finite_numbers(guidances)


@bench_app.command("watermark")
def bench_watermark(
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    n: int = typer.Option(8, "--n", help="images per class (clean, and each of 3 keys)"),
    pipelines: str = typer.Option(",".join(("encoder+naive", "gradient+naive", "gradient-free+naive", "gradient-free+exact")),
                                  help="comma-separated DECODER+METHOD inversion pipelines, method options after a colon (gradient-free+exact:anderson=3)"),
    attacks: str = typer.Option("clean,jpeg,rotation,crop,blur,noise,brightness", help="comma-separated attacks (name or name:strength)"),
    sampler: Optional[str] = typer.Option(None, help="sampler used to generate and to invert; " + SAMPLER_HELP),
    steps: int = typer.Option(50, help="sampler steps"),
    generation_guidance: float = typer.Option(7.5, help="guidance when generating"),
    inversion_guidance: float = typer.Option(1.0, help="guidance when inverting (Tree-Ring: 1, empty prompt)"),
    known_prompt: bool = typer.Option(False, help="invert with each image's prompt and the generation guidance"),
    seed: int = typer.Option(0, help="seed of noises and keys", **SEED_BOUNDS),
    score: str = typer.Option("correlation", help="detection score: correlation (matched filter, detects best) or distance (Tree-Ring's)"),
    radius: Optional[int] = typer.Option(None, help="keys' radius in the latent's Fourier plane (default: a quarter of the latent's side, 4 at 16x16; the paper's: 10 at 64x64)"),
    json_path: JsonOutput = None,
) -> None:
    """Tree-Ring detection (AUC, TPR@1%FPR) and 3-key attribution per inversion pipeline, clean and attacked."""
    with user_errors():
        from diffinv.applications.watermark import check_score
        from diffinv.bench.watermark import format_watermark_tables, parse_pipeline, run_watermark_benchmark
        from diffinv.models.loading import load

        check_score(score)
        if radius is not None and radius < 1:
            raise ValueError(f"--radius must be at least 1, got {radius}")
        pipeline_list = split_specs(pipelines)
        for spec in pipeline_list:
            parse_pipeline(spec)
        pipe = load(model, device=device)
        rows = run_watermark_benchmark(
            pipe, n=n, pipelines=pipeline_list, attacks=split_list(attacks),
            sampler=sampler, steps=steps, generation_guidance=generation_guidance,
            inversion_guidance=inversion_guidance, known_prompt=known_prompt, seed=seed, score=score, radius=radius,
        )
        emit_rows(format_watermark_tables(rows), rows, json_path, model)


@bench_app.command("reconstruction")
def bench_reconstruction(
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    images: Optional[str] = typer.Option(
        None, help="comma-separated: a folder of images, 'skimage' (scikit-image's photos), 'white' (white-area test images)"
    ),
    generated: int = typer.Option(0, "--generated", help="also invert N images the model generates (seeds 0..N-1)"),
    methods: Optional[str] = typer.Option(
        None, help="comma-separated method specs, e.g. naive,easyinv:eta=0.8,order=code,renoise (default: every registered "
        "one of naive, easyinv, fixed-point, renoise, exact)"
    ),
    sampler: Optional[str] = typer.Option(None, help="sampler to invert and regenerate with; " + SAMPLER_HELP),
    steps: int = typer.Option(50, help="sampler steps"),
    guidance: float = typer.Option(1.0, help="guidance when inverting and regenerating"),
    prompt: str = typer.Option("", "--prompt", "-p", help="prompt when inverting and regenerating"),
    image_prompts: bool = typer.Option(False, help="invert each generated image with its own prompt instead"),
    dtype: str = typer.Option("float32", help="float32, float16, or both comma-separated (one run each)"),
    repeats: int = typer.Option(1, help="time each inversion this many times and keep the fastest"),
    per_image: bool = typer.Option(False, help="also print every image's row"),
    json_path: JsonOutput = None,
) -> None:
    """Invert real (and generated) images, regenerate them, and compare: PSNR, SSIM, LPIPS, NFE, seconds."""
    with user_errors():
        from diffinv.bench.images import generated_images, image_sources
        from diffinv.bench.methods import resolve_method
        from diffinv.bench.reconstruction import (
            load_lpips,
            report,
            run_reconstruction_benchmark,
            write_benchmark_json,
        )
        from diffinv.models.loading import load, parse_dtype
        from diffinv.pipeline import default_image_side
        from diffinv.sampler.schedule import check_sampler_name

        check_sampler_name(sampler)
        specs = split_specs(methods) if methods else None
        for spec in specs or []:
            resolve_method(spec)
        dtypes = split_list(dtype)
        for name in dtypes:
            parse_dtype(name)
        if not images and generated < 1:
            raise ValueError("give --images (a folder, 'skimage' or 'white') and/or --generated N")
        lpips_metric, lpips_note = load_lpips()
        rows: list[dict[str, Any]] = []
        bench_images = None
        for name in dtypes:
            pipe = load(model, dtype=name, device=device)
            if bench_images is None:
                size = default_image_side(pipe)
                bench_images = image_sources(images, size) if images else []
                if generated > 0:
                    bench_images += generated_images(pipe, generated, sampler=sampler, steps=steps)
            rows += run_reconstruction_benchmark(
                pipe, bench_images, specs, sampler=sampler, steps=steps, guidance=guidance,
                prompt=None if image_prompts else prompt,
                repeats=repeats, model_name=model, lpips_metric=lpips_metric,
            )
        typer.echo(report(rows, lpips_note, per_image=per_image))
        if json_path:
            write_benchmark_json(json_path, rows, lpips_note)

@bench_app.command("sampler-inversion")
def bench_sampler_inversion(
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    n: int = typer.Option(4, "--n", help="latents (seeds SEED..SEED+N-1) per sampler and guidance"),
    samplers: str = typer.Option("ddim:50,dpm++2m:10", help="comma-separated NAME:STEPS"),
    guidances: str = typer.Option("1,3,7.5", help="comma-separated guidance scales"),
    methods: str = typer.Option("naive,fixed-point,exact,exact-gd,exact-aa",
                                help="comma-separated: naive, fixed-point, exact, exact-gd, exact-aa, or any registered method"),
    tol: float = typer.Option(1e-6, help="per-step relative tolerance of the iterative methods (errors grow along the chain at large guidance)"),
    prompt: str = typer.Option("a red circle on a blue background", "--prompt", "-p",
                               help="prompt to generate and invert with; several '|'-separated are cycled over the seeds"),
    image: bool = typer.Option(False, "--image", help="also invert from the decoded image (decoder inversion first)"),
    decoder: str = typer.Option("gradient", help="decoder inversion for --image"),
    dtype: str = typer.Option("float32", help="model dtype"),
    seed: int = typer.Option(0, help="seed of the first noise", **SEED_BOUNDS),
    json_path: JsonOutput = None,
) -> None:
    """Invert samples of known noise with every method: noise/latent NMSE, NFE, seconds, peak memory."""
    with user_errors():
        from diffinv.bench.methods import resolve_method
        from diffinv.bench.sampler import format_rows, run_sampler_benchmark
        from diffinv.decoder import check_decoder_name
        from diffinv.models.loading import load

        sampler_list, guidance_list = sampler_grid(samplers, guidances, n)
        method_list = split_specs(methods)
        for label in method_list:
            resolve_method(label, tol)
        if image:
            check_decoder_name(decoder)
        pipe = load(model, dtype=dtype, device=device)
        rows = run_sampler_benchmark(
            pipe, n=n, samplers=sampler_list, guidances=guidance_list, methods=method_list,
            prompt=split_list(prompt, "|") or [""], seed=seed, tol=tol, image=image, decoder=decoder,
        )
        emit_rows(format_rows(rows), rows, json_path, model)


@bench_app.command("decoder-inversion")
def bench_decoder_inversion(
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    frames: str = typer.Option("1,4,16", help="comma-separated frame counts (one table each)"),
    iterations: str = typer.Option("20,50,100,200", help="comma-separated iteration counts"),
    methods: Optional[str] = typer.Option(None, help="comma-separated variants, e.g. 'gradient-free,gradient:lr=0.01,schedule=false' (default: the paper's set)"),
    dtypes: str = typer.Option("float32", "--dtype", help="float32, float16 or both (comma-separated)"),
    prompts: str = typer.Option("", help="sample the true latents from these prompts ('|'-separated); default: seeded Gaussian latents"),
    video_size: Optional[int] = typer.Option(None, help="frames: a SIZE x SIZE window panning across a photo, true latents E(frame) (instead of --prompts)"),
    chunk_size: Optional[int] = typer.Option(None, help="frames per chunk (bounds memory)"),
    seed: int = typer.Option(0, help="seed of the latents", **SEED_BOUNDS),
    settings: str = typer.Option("float", help="comma-separated: float (the decodings as they are, fitted with clipped=false), "
                                 "saved (clipped to [-1, 1] and rounded to 8 bits as a PNG holds them)"),
    guidance: str = typer.Option("7.5", help="comma-separated guidance scales of the --prompts samples (one table each)"),
    sample_steps: int = typer.Option(50, help="sampler steps of the --prompts samples (the model's default sampler)"),
    json_path: JsonOutput = None,
    plot: Optional[Path] = typer.Option(None, help="write the NMSE-against-time (Pareto) plot here (PNG)", callback=writable_file),
) -> None:
    """Decoder inversion methods on frames decoded from known latents: NMSE, PSNR, seconds, peak memory."""
    with user_errors():
        from diffinv.bench.decoder import run_decoder_benchmark
        from diffinv.models.loading import load

        variants = split_specs(methods) if methods else None
        pipe = load(model, device=device)
        run_decoder_benchmark(
            pipe, frames=whole_numbers(frames), iterations=whole_numbers(iterations), methods=variants,
            dtype=split_list(dtypes), out_json=json_path, out_plot=plot, model_name=model,
            sample_prompts=split_list(prompts, "|") or None, chunk_size=chunk_size, seed=seed,
            video_size=video_size, settings=split_list(settings), guidance=finite_numbers(guidance),
            sample_steps=sample_steps,
        )


@bench_app.command("editing")
def bench_editing(
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    n: int = typer.Option(8, "--n", help="generated images per (edit, sampler, guidance)"),
    samplers: str = typer.Option("ddim:50,dpm++2m:10", help="comma-separated NAME:STEPS"),
    guidances: str = typer.Option("3,7.5", help="comma-separated guidance scales"),
    methods: str = typer.Option("true-noise,naive,exact-aa,easyinv,renoise,fixed-point",
                                help="comma-separated inversion methods (bench sampler-inversion's labels; "
                                     "true-noise: the scenes' own noise, a perfect inversion)"),
    modes: str = typer.Option("prompt-to-prompt,diffedit",
                              help="comma-separated editing modes, options after a colon (prompt-to-prompt:local_blend=0.3)"),
    edits: str = typer.Option("colour,shape", help="comma-separated scene edits (colour, shape)"),
    photos: str = typer.Option("astronaut,chelsea,coffee,rocket", help="scikit-image photos edited inside a given disc ('' for none)"),
    decoder: str = typer.Option("encoder", help="decoder inversion, options after a colon (gradient:clipped=false)"),
    saved: bool = typer.Option(False, "--saved", help="edit the scenes as diffinv generate saves them (clipped and rounded to 8 bits)"),
    tol: float = typer.Option(1e-4, help="per-step relative tolerance of exact and fixed-point"),
    seed: int = typer.Option(0, help="seed of the first image", **SEED_BOUNDS),
    json_path: JsonOutput = None,
) -> None:
    """Edit generated scenes and photos with every inversion method and mode: background PSNR/SSIM, edit success."""
    with user_errors():
        from diffinv.bench.editing import check_mode_spec, format_rows, run_editing_benchmark
        from diffinv.decoder import DECODERS
        from diffinv.models.loading import load

        sampler_list, guidance_list = sampler_grid(samplers, guidances, n)
        mode_list = [check_mode_spec(spec) for spec in split_specs(modes)]
        DECODERS.resolve(decoder)
        pipe = load(model, device=device)
        rows = run_editing_benchmark(pipe, n=n, samplers=sampler_list, guidances=guidance_list,
                                     methods=split_specs(methods), modes=mode_list, edits=split_list(edits),
                                     photos=split_list(photos), decoder=decoder, saved=saved, tol=tol, seed=seed)
        emit_rows(format_rows(rows), rows, json_path, model)


@bench_app.command("overhead")
def bench_overhead(
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    steps: str = typer.Option("10,50", help="comma-separated step counts"),
    guidances: str = typer.Option("1,7.5", help="comma-separated guidance scales"),
    batch: int = typer.Option(1, help="latents per inversion"),
    repeats: int = typer.Option(7, help="alternating runs of each; the median is reported"),
    json_path: JsonOutput = None,
) -> None:
    """Wall time of diffinv's naive DDIM inversion against a plain diffusers DDIMInverseScheduler loop."""
    with user_errors():
        from diffinv.bench.overhead import format_rows, run_overhead_benchmark
        from diffinv.models.loading import load

        step_list, guidance_list = whole_numbers(steps), finite_numbers(guidances)
        if batch < 1 or repeats < 1:
            raise ValueError("--batch and --repeats must be at least 1")
        pipe = load(model, device=device)
        rows = [row for count in step_list for w in guidance_list
                for row in run_overhead_benchmark(pipe, steps=count, guidance=w, batch=batch, repeats=repeats)]
        emit_rows(format_rows(rows), rows, json_path, model)


@bench_app.command("full-size")
def bench_full_size(
    models: str = typer.Option("sd2.1,sdxl,sd3,flux", help="comma-separated: sd2.1, sdxl, sd3, flux (random weights, published configs)"),
    frames: str = typer.Option("1,4", help="comma-separated frame counts of the decoder part (each all at once and in chunks of 1)"),
    iterations: int = typer.Option(2, help="decoder-inversion iterations per run"),
    dtype: str = typer.Option("float32,bfloat16", "--dtype", help="comma-separated: float32, float16, bfloat16 (one build each)"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N or mps (default: the first GPU when there is one)"),
    parts: str = typer.Option("call,inversion,decoder,smoke", help="comma-separated parts: call, inversion, decoder, smoke"),
    steps: int = typer.Option(2, help="steps of the naive-against-diffusers inversion timing"),
    repeats: int = typer.Option(2, help="alternated runs of that timing; the fastest of each is kept"),
    full_steps: int = typer.Option(0, help="also a naive and an exact DDIM inversion of this many steps against diffusers (0: none)"),
    memory_limit: Optional[float] = typer.Option(None, help="GiB a model and its runs may use (default: what the device has free)"),
    smoke_size: Optional[int] = typer.Option(None, help="image side of the smoke pass in px (default: native on a GPU, 128 elsewhere)"),
    decoder_methods: str = typer.Option("encoder,gradient,gradient-free,forward-step", help="comma-separated decoder methods of the decoder part"),
    chunks: str = typer.Option("all,1", help="decoder part, frames at once: all, 1 (chunks of one frame) or both"),
    json_path: Optional[Path] = typer.Option(None, "--json", help='write {"rows": [...]} here (rewritten after each part and decoder run)'),
) -> None:
    """SD 2.1, SDXL, SD3 and Flux at full size: network call, naive inversion against diffusers, decoder inversion, smoke pass."""
    with user_errors():
        from diffinv.bench.fullsize import (
            check_chunks,
            check_json_path,
            check_models,
            check_parts,
            format_rows,
            run_full_size_benchmark,
        )
        from diffinv.decoder import check_decoder_name
        from diffinv.models.device import HalfPrecisionOverflow, OutOfMemory, resolve_device
        from diffinv.models.loading import parse_dtype

        model_list, part_list = check_models(split_list(models)), check_parts(split_list(parts))
        chunk_list, method_list = check_chunks(split_list(chunks)), [check_decoder_name(name) for name in split_list(decoder_methods)]
        dtypes = split_list(dtype)
        for name in dtypes:
            parse_dtype(name)
        if memory_limit is not None and not memory_limit > 0:
            raise ValueError(f"--memory-limit must be a positive number of GiB, got {memory_limit}")
        resolve_device(device)
        check_json_path(json_path)
        try:
            rows = run_full_size_benchmark(
                models=model_list, frames=whole_numbers(frames), iterations=iterations, dtypes=dtypes, device=device,
                parts=part_list, steps=steps, repeats=repeats, full_steps=full_steps, smoke_size=smoke_size,
                memory_limit=None if memory_limit is None else int(memory_limit * 2**30), json_path=json_path,
                decoder_methods=method_list, chunks=chunk_list,
            )
        except (OutOfMemory, HalfPrecisionOverflow) as error:
            raise ValueError(str(error)) from None
        typer.echo(format_rows(rows))
