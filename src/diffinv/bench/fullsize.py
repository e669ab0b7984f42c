"""Cost, fit and precision at the size users run: SD 2.1-base, SDXL, SD3 medium and Flux architectures.

Each model is built from its published configuration with random weights (`diffinv.bench.architectures`;
nothing is downloaded): the cost of a network call and the memory it takes depend on the shapes, not on
the weights' values. The text encoders are one-layer random CLIP (and T5) stand-ins of the right output
widths, because what is measured is the denoiser and the VAE. Accuracy does not carry over from random networks; cost, fit and
whether every method runs do.

Parts, each a list of flat rows:
- `call`: one guided network call at the native size (seconds, peak memory);
- `inversion`: diffinv's naive inversion against a bare diffusers `DDIMInverseScheduler` loop making the
  same UNet calls, alternated, fastest of `repeats` (wall-time ratio, and the CPU-time ratio); with
  `full_steps` also a naive and an exact inversion of that many steps;
- `decoder`: every decoder-inversion method at 1..N frames, all frames at once and in chunks of 1;
- `smoke`: every sampler-inversion method for 2 steps and every decoder method for 2 iterations.

Peak memory is `diffinv.utils.measure`: on CUDA the allocator's peak above what was allocated before
(weights excluded), on a CPU the growth of the process's resident high-water mark (VmHWM) over the
resident set before; each row's `memory_source` says which.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from diffinv.bench.architectures import (
    PARTS,
    SPECS,
    Spec,
    available_memory,
    build_pipeline,
    check_chunks,
    check_json_path,
    check_models,
    check_parts,
    device_name,
    fit_reason,
    memory_source,
)
from diffinv.bench.clocks import NetworkClock, sync, timed
from diffinv.bench.tables import Column, format_table, write_rows
from diffinv.models.autoencoder import Autoencoder
from diffinv.models.denoiser import Denoiser, latent_channels, network_of
from diffinv.models.device import OutOfMemory, is_out_of_memory, out_of_memory_hint, resolve_device
from diffinv.models.loading import parse_dtype
from diffinv.utils.measure import measure, release_memory

PROMPT = "a photo of a cat on a red background"
GUIDANCE = 7.5
#: The decoder methods the decoder part runs by default (the paper's comparison and the encoder).
DECODER_RUN_METHODS = ("encoder", "gradient", "gradient-free", "forward-step")

#: Options that keep the smoke pass to a few network calls per step (it checks that each method runs).
SMOKE_OPTIONS: dict[str, dict[str, Any]] = {
    "exact": {"max_iter": 2, "fine_steps": 1},
    "fixed-point": {"max_iter": 2, "fine_steps": 1},
    "renoise": {"renoise_steps": 2, "early_renoise_steps": 2, "early_average": (0, 2)},
}


# -------------------------------------------------------------------------------------------------- parts


def _latent(pipe, side: int, seed: int = 0) -> torch.Tensor:
    """A seeded N(0, I) float32 z_0 of the latent shape for images of `side` pixels."""
    factor = pipe.vae_scale_factor
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, latent_channels(pipe), side // factor, side // factor, generator=generator).to(network_of(pipe).device)


def _denoiser(pipe, side: int, guidance: float = GUIDANCE) -> Denoiser:
    from diffinv.pipeline import pipeline_schedule

    schedule = pipeline_schedule(pipe, None, 2, (side // pipe.vae_scale_factor,) * 2)
    return Denoiser.from_pipeline(pipe, PROMPT, 1, guidance, schedule.prediction_type, image_size=(side, side))


def call_rows(pipe, spec: Spec, side: int) -> list[dict[str, Any]]:
    """One guided network call (batch 2: unconditional and conditional) at `side` px, after one warm-up call."""
    denoiser = _denoiser(pipe, side)
    x = _latent(pipe, side)
    with torch.inference_mode():
        denoiser.output(x, 500)  # warm-up: kernels chosen, memory pools grown
        with measure(denoiser.device) as cost:
            denoiser.output(x, 500)
    return [{"part": "call", "method": "guided network call", "batch": 2 if denoiser.guided else 1,
             "seconds": cost.seconds, "peak_memory_bytes": cost.peak_memory_bytes}]


@torch.inference_mode()
def diffusers_inverse_loop(pipe, denoiser: Denoiser, latent: torch.Tensor, steps: int) -> tuple[torch.Tensor, int]:
    """z_0 -> z_T with `DDIMInverseScheduler` in a bare loop making the UNet calls a diffusers user writes
    (same embeddings, added conditioning and guidance as `denoiser`); returns (z_T, network calls)."""
    from diffusers import DDIMInverseScheduler

    inverse_scheduler = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    inverse_scheduler.set_timesteps(steps)
    unet, x, calls = pipe.unet, latent, 0
    for t in inverse_scheduler.timesteps:
        model_input = torch.cat([x, x]) if denoiser.guided else x
        output = unet(model_input.to(denoiser.network_dtype), t, encoder_hidden_states=denoiser.embeds,
                      added_cond_kwargs=denoiser.added, return_dict=False)[0].float()
        calls += 1
        if denoiser.guided:
            unconditional, conditional = output.chunk(2)
            output = unconditional + denoiser.guidance * (conditional - unconditional)
        x = inverse_scheduler.step(output, t, x).prev_sample
    return x, calls


def inversion_rows(pipe, spec: Spec, side: int, steps: int, repeats: int, full_steps: int = 0,
                   latent: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """Naive DDIM inversion by diffinv and by the bare diffusers loop over `steps` steps, alternated `repeats`
    times (fastest of each: wall, CPU and outside-the-network seconds); with `full_steps`, also naive, exact and
    the diffusers loop over that many steps."""
    from diffinv.inversion import invert_sampler
    from diffinv.sampler.schedule import make_schedule
    from diffinv.utils.metrics import nmse

    denoiser = _denoiser(pipe, side)
    z0 = _latent(pipe, side) if latent is None else latent
    if spec.network != "UNet2DConditionModel":  # a flow model: no diffusers DDIM inverse scheduler to compare with
        from diffinv.pipeline import pipeline_schedule

        schedule = pipeline_schedule(pipe, None, steps, tuple(z0.shape[-2:]))
        result, seconds, cpu = timed(denoiser.device, lambda: invert_sampler(denoiser, schedule, z0, method="naive"))
        return [{"part": "inversion", "method": "naive (flow-euler)", "steps": steps, "seconds": seconds, "cpu_seconds": cpu,
                 "nfe": result.nfe,
                 "note": "flow-matching model: no DDIMInverseScheduler loop to compare with"}]
    rows = []
    clock = NetworkClock(pipe.unet, denoiser.device)

    def compare(work: Callable[[], Any]) -> tuple[Any, tuple[float, float, float]]:
        clock.seconds = 0.0
        result, wall, cpu = timed(denoiser.device, work)
        return result, (wall, cpu, wall - clock.seconds)

    try:
        for count, rounds, methods in [(steps, repeats, ("naive",))] + ([(full_steps, 1, ("naive", "exact"))] if full_steps else []):
            schedule = make_schedule("ddim", pipe.scheduler.config, count)
            ours: dict[str, list[tuple[float, float, float]]] = {method: [] for method in methods}
            theirs: list[tuple[float, float, float]] = []
            results: dict[str, Any] = {}
            for _ in range(rounds):  # diffusers first: any warm-up cost lands on the reference, not on diffinv
                (reference, calls), times = compare(lambda: diffusers_inverse_loop(pipe, denoiser, z0, count))
                theirs.append(times)
                for method in methods:
                    results[method], times = compare(lambda: invert_sampler(denoiser, schedule, z0, method=method))
                    ours[method].append(times)
            base = {"part": "inversion", "steps": count, "repeats": rounds}
            wall, cpu, outside = (min(t[i] for t in theirs) for i in range(3))
            rows.append({**base, "method": "diffusers DDIMInverseScheduler loop", "seconds": wall, "cpu_seconds": cpu,
                         "outside_seconds": outside, "nfe": calls})
            for method in methods:
                mine_wall, mine_cpu, mine_outside = (min(t[i] for t in ours[method]) for i in range(3))
                rows.append({**base, "method": f"diffinv {method}", "seconds": mine_wall, "cpu_seconds": mine_cpu,
                             "outside_seconds": mine_outside, "nfe": results[method].nfe, "ratio": mine_wall / wall,
                             "cpu_ratio": mine_cpu / cpu if cpu > 0 else None,
                             "outside_share": (mine_outside - outside) / wall,
                             "noise_nmse_to_diffusers": nmse(results[method].noise, reference)})
    finally:
        clock.close()
    return rows


def decoder_rows(pipe, frames: Sequence[int], iterations: int, limit: int | None,
                 methods: Sequence[str] = DECODER_RUN_METHODS, side: int | None = None, progress: bool = True,
                 chunks: Sequence[str] = ("all", "1"), on_row: Callable[[dict[str, Any]], None] | None = None,
                 ) -> list[dict[str, Any]]:
    """Every decoder method on 1..N frames of `side` px (a photo panned, as video frames), all at once and/or
    in chunks of 1 (`chunks`). A run whose memory, estimated from the same method's smallest measured run
    scaled by the frames at once, passes `limit` bytes (what is left beside the weights) is skipped with the
    estimate in its row. `on_row` sees each row as it is made."""
    from diffinv.bench.images import panning_frames
    from diffinv.decoder import invert_decoder

    autoencoder = Autoencoder.from_pipeline(pipe)
    side = side or int(pipe.vae.config.sample_size)
    images = panning_frames(side, max(frames)).to(autoencoder.device)
    with torch.inference_mode():
        autoencoder.decode(autoencoder.encode(images[:1]))  # warm-up outside any measurement
    sizes = {count: list(dict.fromkeys(count if choice == "all" else 1 for choice in check_chunks(chunks)))
             for count in sorted(set(frames))}
    plan = [(count, chunk, method) for count, chunk_sizes in sizes.items() for chunk in chunk_sizes for method in methods]
    per_frame: dict[str, int] = {}  # method -> peak bytes per frame at once, from its smallest run
    encode_seconds: dict[tuple[int, int], float] = {}
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)

    for count, chunk, method in tqdm(plan, desc="decoder inversion", disable=not progress, leave=False):
        row: dict[str, Any] = {"part": "decoder", "method": method, "frames": count, "chunk": chunk,
                               "iterations": 0 if method == "encoder" else iterations}
        if limit is not None and method in per_frame and per_frame[method] * chunk > limit:
            estimate = per_frame[method] * chunk
            add({**row, "status": "did not fit",
                         "note": f"estimated {estimate / 2**30:.1f} GiB ({chunk} x {per_frame[method] / 2**30:.2f} GiB per frame) "
                                 f"> limit {limit / 2**30:.1f} GiB"})
            continue
        options: dict[str, Any] = {"chunk_size": chunk, "on_divergence": "report"}
        if method != "encoder":
            options["iterations"] = iterations
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                with out_of_memory_hint(f"inverting the decoder ({method}, {chunk} frames at once)",
                                        "lower it with a smaller chunk size or --dtype bfloat16"):
                    result = invert_decoder(autoencoder, images[:count], method, **options)
        except OutOfMemory as error:
            add({**row, "status": "out of memory", "note": str(error)})
            continue
        if method == "encoder":
            encode_seconds[(count, chunk)] = result.seconds
        per_frame.setdefault(method, math.ceil(result.peak_memory_bytes / chunk))
        solving = result.seconds - encode_seconds.get((count, chunk), 0.0)
        add({**row, "seconds": result.seconds, "peak_memory_bytes": result.peak_memory_bytes,
                     "compute_dtype": result.dtype,
                     "seconds_per_iteration": solving / iterations if method != "encoder" and iterations else None,
                     "status": "ok" if not result.diverged else "diverged", "note": result.reason})
    return rows


def smoke_rows(pipe, spec: Spec, side: int, progress: bool = True) -> list[dict[str, Any]]:
    """Every sampler-inversion method for 2 steps and every decoder method for 2 iterations at `side` px:
    a row each, status ok when it ran and gave finite values, else the error in one line."""
    from diffinv.bench.images import panning_frames
    from diffinv.decoder import DECODER_METHODS, invert_decoder
    from diffinv.inversion import METHODS, invert_sampler
    from diffinv.pipeline import pipeline_schedule

    denoiser = _denoiser(pipe, side)
    z0 = _latent(pipe, side)
    schedule = pipeline_schedule(pipe, None, 2, tuple(z0.shape[-2:]))
    autoencoder = Autoencoder.from_pipeline(pipe)
    image = panning_frames(side, 1).to(autoencoder.device)
    jobs: list[tuple[str, str, Callable[[], torch.Tensor]]] = []
    for method in METHODS:
        jobs.append(("sampler", method, lambda m=method: invert_sampler(denoiser, schedule, z0, method=m, **SMOKE_OPTIONS.get(m, {})).noise))
    for method in DECODER_METHODS:
        options = {} if method == "encoder" else {"iterations": 2}
        jobs.append(("decoder", method, lambda m=method, o=options: invert_decoder(autoencoder, image, m, **o).latent))
    rows = []
    for kind, method, job in tqdm(jobs, desc="smoke pass", disable=not progress, leave=False):
        row = {"part": "smoke", "method": f"{kind} {method}", "steps": 2 if kind == "sampler" else None,
               "iterations": (0 if method == "encoder" else 2) if kind == "decoder" else None}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                output, seconds, _ = timed(denoiser.device, job)
            finite = bool(torch.isfinite(output).all())
            rows.append({**row, "seconds": seconds, "status": "ok" if finite else "not finite"})
        except Exception as error:  # the smoke pass reports every failure as a row
            if is_out_of_memory(error):
                raise
            rows.append({**row, "status": "error", "note": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"})
    return rows


# ----------------------------------------------------------------------------------------------- the run


def run_full_size_benchmark(
    models: Sequence[str] = ("sd2.1",),
    frames: Sequence[int] = (1, 4),
    iterations: int = 2,
    dtypes: Sequence[str] = ("float32",),
    device: str | torch.device | None = None,
    parts: Sequence[str] = PARTS,
    steps: int = 2,
    repeats: int = 2,
    full_steps: int = 0,
    memory_limit: int | None = None,
    smoke_size: int | None = None,
    seed: int = 0,
    json_path: str | Path | None = None,
    progress: bool = True,
    decoder_methods: Sequence[str] = DECODER_RUN_METHODS,
    chunks: Sequence[str] = ("all", "1"),
) -> list[dict[str, Any]]:
    """Build each model in each dtype (or skip it when it cannot fit) and run the chosen parts; the rows so far
    are rewritten to `json_path` after each part and each decoder run, so an interrupted run keeps what finished."""
    from diffinv.decoder import check_decoder_name

    models, parts, chunks = check_models(models), check_parts(parts), check_chunks(chunks)
    decoder_methods = [check_decoder_name(name) for name in decoder_methods]
    if not decoder_methods:
        raise ValueError("give at least one decoder method")
    torch_dtypes = [parse_dtype(name) for name in dtypes]
    if iterations < 1 or steps < 1 or repeats < 1 or full_steps < 0 or not frames or min(frames) < 1:
        raise ValueError("--iterations, --steps, --repeats and --frames must be at least 1 (--full-steps at least 0)")
    device = resolve_device(device)
    check_json_path(json_path)
    rows: list[dict[str, Any]] = []
    common_extra = {"device": str(device), "device_name": device_name(device), "memory_source": memory_source(device),
                    "threads": torch.get_num_threads()}
    for name in models:
        spec = SPECS[name]
        for dtype in torch_dtypes:
            label = str(dtype).removeprefix("torch.")
            base = {"model": name, "title": spec.title, "dtype": label, **common_extra}
            limit = memory_limit if memory_limit is not None else available_memory(device)
            reason = fit_reason(name, dtype, device, memory_limit)
            if reason:
                rows.append({**base, "part": "build", "status": "skipped", "note": reason})
                tqdm.write(f"{spec.title} {label}: skipped, {reason}")
                _save(json_path, rows)
                continue
            with out_of_memory_hint(f"building {spec.title} in {label}", "try --dtype bfloat16 or a smaller model"):
                pipe, build_seconds, _ = timed(device, lambda: build_pipeline(name, dtype, device, seed))
            weights = sum(p.numel() * p.element_size() for p in network_of(pipe).parameters())
            vae_weights = sum(p.numel() * p.element_size() for p in pipe.vae.parameters())
            base.update(network_bytes=weights, vae_bytes=vae_weights)
            rows.append({**base, "part": "build", "status": "ok", "seconds": build_seconds,
                         "note": "random weights; text encoders are 1-layer stand-ins"})
            native = spec.side
            small = smoke_size or (native if device.type == "cuda" else 128)
            for part in tqdm(parts, desc=f"{spec.title} {label}", disable=not progress):
                size = small if part == "smoke" else native
                extra = {"pixels": size}
                try:
                    what = f"running the {part} part of {spec.title} at {size}px in {label}"
                    with out_of_memory_hint(what, "lower it with --frames, a smaller --smoke-size or --dtype bfloat16"):
                        if part == "call":
                            new = call_rows(pipe, spec, size)
                        elif part == "inversion":
                            new = inversion_rows(pipe, spec, size, steps, repeats, full_steps)
                        elif part == "decoder":
                            done: list[dict[str, Any]] = []

                            def keep(row: dict[str, Any]) -> None:
                                done.append({**base, **extra, "status": "ok", **row})
                                _save(json_path, rows + done)

                            new = decoder_rows(pipe, frames, iterations, limit - weights - vae_weights, decoder_methods,
                                               progress=progress, chunks=chunks, on_row=keep)
                        else:
                            new = smoke_rows(pipe, spec, size, progress=progress)
                except OutOfMemory as error:
                    new = [{"part": part, "status": "out of memory", "note": str(error)}]
                rows += [{**base, **extra, "status": "ok", **row} for row in new]
                _save(json_path, rows)
            del pipe
            release_memory(full=True)
    return rows


def _save(path: str | Path | None, rows: list[dict[str, Any]]) -> None:
    if path is not None:
        write_rows(path, rows)


COLUMNS: list[Column] = [
    ("model", "model", ""), ("dtype", "dtype", ""), ("part", "part", ""), ("method", "method", ""), ("pixels", "px", ""),
    ("frames", "frames", ""), ("chunk", "chunk", ""), ("steps_or_iterations", "steps/iters", ""), ("seconds", "seconds", ".2f"),
    ("seconds_per_iteration", "s/iter", ".2f"), ("peak_memory_mb", "peak MB", ".0f"), ("ratio", "ratio", ".3f"), ("cpu_ratio", "CPU ratio", ".3f"),
    ("outside_seconds", "outside s", ".3f"), ("outside_share", "extra outside", ".2%"),
    ("noise_nmse_to_diffusers", "NMSE to diffusers", ".1e"),
    ("status", "status", ""), ("note", "note", ""),
]


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as one text table, with where its peak memory comes from."""
    shown = [{**row, "peak_memory_mb": row["peak_memory_bytes"] / 2**20 if row.get("peak_memory_bytes") is not None else None,
              "steps_or_iterations": row.get("steps") if row.get("steps") is not None else row.get("iterations")}
             for row in rows]
    sources = sorted({row["memory_source"] for row in rows if row.get("memory_source")})
    devices = sorted({f"{row['device_name']} ({row['threads']} thread{'s' if row['threads'] != 1 else ''})" if row.get("device") == "cpu" else row["device_name"]
                      for row in rows if row.get("device_name")})
    title = (f"Full-size architectures, random weights (text encoders: 1-layer stand-ins); device: {', '.join(devices) or '-'}; "
             f"peak memory: {', '.join(sources) or '-'}, above the memory in use before each run")
    return format_table(shown, COLUMNS, title=title)
