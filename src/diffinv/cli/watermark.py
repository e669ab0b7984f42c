"""`diffinv watermark embed` and `diffinv watermark detect` (Tree-Ring)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from diffinv.cli.common import (
    DEVICE_HELP,
    SEED_BOUNDS,
    MODEL_HELP,
    SAMPLER_HELP,
    DecoderOptions,
    MethodOptions,
    check_names,
    echo_report,
    read_images,
    save_images,
    user_errors,
    watermark_app,
)
from diffinv.utils.sources import is_dataset
from diffinv.utils.specs import parse_options


@watermark_app.command("embed")
def watermark_embed(
    prompt: str = typer.Option(..., "--prompt", "-p", help="text prompt"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder"),
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    key: Optional[Path] = typer.Option(None, help="reuse this key file (default: make a new one, saved as OUT/key.safetensors)"),
    seed: int = typer.Option(0, help="seed of the initial noise", **SEED_BOUNDS),
    key_seed: int = typer.Option(0, help="seed of a new key", **SEED_BOUNDS),
    channel: int = typer.Option(-1, help="latent channel that carries a new key (Tree-Ring: the last)"),
    radius: Optional[int] = typer.Option(None, help="radius of a new key in the latent's Fourier plane (default: a quarter of the latent's side, which detects best; the paper's: 10 at 64x64)"),
    pattern: str = typer.Option("ring", help="ring, rand or zeros"),
    sampler: Optional[str] = typer.Option(None, help=SAMPLER_HELP),
    steps: int = typer.Option(50, help="number of sampling steps"),
    guidance: float = typer.Option(7.5, help="classifier-free guidance scale"),
) -> None:
    """Generate an image whose initial noise carries a Tree-Ring key; write image, key, noise, report."""
    with user_errors():
        from diffinv.applications.watermark import WatermarkKey, generate_watermarked, make_key
        from diffinv.models.loading import load
        from diffinv.pipeline import latent_shape
        from diffinv.sampler.schedule import check_sampler_name
        from diffinv.utils.outputs import check_writable, save_tensor, staged_folder, write_json

        check_writable(out)
        check_sampler_name(sampler)
        pipe = load(model, device=device)
        shape = latent_shape(pipe, 1)[1:]
        the_key = WatermarkKey.load(key) if key else make_key(shape, channel, radius, pattern, key_seed)
        result = generate_watermarked(pipe, prompt, the_key, seed=seed, sampler=sampler, steps=steps, guidance=guidance, progress=True)
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
    images: list[Path] = typer.Argument(..., help="image files, or a dataset: a folder, a glob or a .txt/.jsonl manifest"),
    key: list[Path] = typer.Option(..., help="key file written by `watermark embed` (repeat for several keys)"),
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    prompt: str = typer.Option("", "--prompt", "-p", help="prompt for inversion (Tree-Ring: empty)"),
    sampler: Optional[str] = typer.Option(None, help="sampler to invert; " + SAMPLER_HELP),
    steps: int = typer.Option(50, help="number of steps to invert"),
    guidance: float = typer.Option(1.0, help="guidance used for inversion (Tree-Ring: 1)"),
    method: str = typer.Option("naive", help="sampler inversion method"),
    decoder: str = typer.Option("encoder", help="decoder inversion method"),
    method_option: MethodOptions = None,
    decoder_option: DecoderOptions = None,
    attack: str = typer.Option("clean", help="attack the images first: jpeg[:q], rotation[:deg], crop[:area], blur[:r], noise[:std], brightness[:jitter] (image i draws seed i)"),
    threshold: float = typer.Option(0.01, help="p-value below which an image is called watermarked"),
    score: str = typer.Option("correlation", help="dataset runs: score for AUC and attribution, correlation (the matched filter, detects best) or distance (Tree-Ring's)"),
    resize: bool = typer.Option(False, help="resize images to the model's size"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="dataset runs: output folder (results.jsonl, detection.json)"),
    batch_size: int = typer.Option(8, help="dataset runs: images per batch"),
    overwrite: bool = typer.Option(False, help="dataset runs: redo images already inverted with these settings"),
) -> None:
    """Invert images to their noise and print, per image, the distance to the key, the correlation with it and a p-value.

    Given a dataset (a manifest's "label": clean or -1, or the key's index 0, 1, ...), it streams and resumes
    like `invert`, then prints and writes AUC, TPR at 1% FPR and, with several keys, the attribution accuracy."""
    with user_errors():
        import torch

        from diffinv.applications.attacks import apply_attack, check_attack
        from diffinv.applications.watermark import WatermarkKey, check_score, detect
        from diffinv.models.loading import load
        from diffinv.pipeline import latent_shape
        from diffinv.utils.images import pil_to_tensor, tensor_to_pil
        from diffinv.utils.outputs import check_writable

        check_names(sampler, method, decoder, guidance, parse_options(method_option))
        check_attack(attack)
        check_score(score)
        keys = [WatermarkKey.load(path) for path in key]
        for path, one in zip(key[1:], keys[1:]):
            one.check_fits(keys[0].shape, f"{path}")
        if is_dataset(images):
            if out is None:
                raise ValueError("a dataset run needs --out (results.jsonl and detection.json go there)")
            if attack != "clean":
                raise ValueError("--attack applies to image files; attack a dataset's images when you make it")
            check_writable(out)
            detect_dataset(images, out, keys, threshold, score, batch_size, resize, overwrite, dict(
                model=model, dtype="float32", prompt=prompt, sampler=sampler, steps=steps, guidance=guidance,
                method=method, decoder=decoder, method_options=parse_options(method_option),
                decoder_options=parse_options(decoder_option)))
            return
        the_key = keys[0]
        pipe = load(model, device=device)
        the_key.check_fits(latent_shape(pipe, 1)[1:], str(key[0]))
        attacked = [pil_to_tensor(apply_attack(image, attack, seed=index))
                    for index, image in enumerate(tensor_to_pil(read_images(pipe, images, resize)))]
        found = detect(pipe, torch.stack(attacked), the_key, prompt=prompt, sampler=sampler, steps=steps,
                       guidance=guidance, method=method, decoder=decoder, method_options=parse_options(method_option),
                       decoder_options=parse_options(decoder_option), progress=True)
        rows = [{"image": str(path), "attack": attack, **row} for path, row in zip(images, found.report(threshold))]
        echo_report({"model": model, "images": rows, "inversion": found.inversion.report})


def detect_dataset(sources: list[Path], out: Path, keys, threshold: float, score: str, batch_size: int, resize: bool,
                   overwrite: bool, settings: dict[str, Any]) -> None:
    """The dataset form of `watermark detect`: invert (resumable, sharded), then score every image."""
    from diffinv.applications.watermark import score_dataset
    from diffinv.cli.commands import invert_folder
    from diffinv.utils.outputs import write_json

    from diffinv.pipeline import latent_shape

    def check_keys(pipe) -> None:
        for one in keys:
            one.check_fits(latent_shape(pipe, 1)[1:], "the key")

    summary = invert_folder(sources, out, settings, batch_size, resize, overwrite, exit_on_failure=False,
                            check_model=check_keys)
    if summary is None:  # not the main process
        return
    rows, metrics = score_dataset(summary.records, out, keys, threshold, score)
    write_json(Path(out) / "detection.json", {"metrics": metrics, "rows": rows})
    typer.echo(json.dumps(metrics, indent=2))  # stdout holds only this JSON; progress and the summary go to stderr
    if any(r.get("status") != "ok" for r in summary.records):
        raise typer.Exit(1)
