"""`diffinv edit`: invert an image with one prompt, regenerate it with another, keep the background."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from diffinv.cli.common import (
    DEVICE_HELP,
    DTYPE_HELP,
    MODEL_HELP,
    SAMPLER_HELP,
    DecoderOptions,
    MethodOptions,
    app,
    check_names,
    echo_report,
    read_images,
    save_comparison,
    user_errors,
)
from diffinv.utils.specs import parse_options


@app.command()
def edit(
    image: Path = typer.Argument(..., help="the image to edit"),
    source_prompt: str = typer.Option(..., "--source-prompt", help="what the image shows (used to invert it)"),
    target_prompt: str = typer.Option(..., "--target-prompt", help="what the edited image should show"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder"),
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    mode: str = typer.Option("prompt-to-prompt", help="prompt-to-prompt or diffedit"),
    mask: Optional[Path] = typer.Option(None, help="mask image, any size (white = region to edit); default: DiffEdit's estimate"),
    sampler: Optional[str] = typer.Option(None, help=SAMPLER_HELP),
    steps: int = typer.Option(50, help="number of sampler steps"),
    guidance: float = typer.Option(7.5, help="classifier-free guidance scale (1 = none)"),
    method: str = typer.Option("exact", help="sampler inversion method"),
    decoder: str = typer.Option("encoder", help="decoder inversion method"),
    method_option: MethodOptions = None,
    decoder_option: DecoderOptions = None,
    mode_option: Optional[list[str]] = typer.Option(None, "--mode-option",
                                                    help="KEY=VALUE for the mode (cross_fraction, self_fraction, local_blend; strength, draws, threshold, ...)"),
    resize: bool = typer.Option(False, help="resize the image to the model's size instead of refusing other sizes"),
    dtype: str = typer.Option("float32", help=DTYPE_HELP),
) -> None:
    """Edit an image: write edited.png, reconstruction.png, mask.png, comparison.png and report.json."""
    with user_errors():
        from diffinv.applications.editing import edit as run_edit
        from diffinv.applications.editing import EDIT_MODES
        from diffinv.models.loading import load
        from diffinv.utils.images import load_mask, tensor_to_pil
        from diffinv.utils.outputs import check_writable, staged_folder, write_json

        check_writable(out)
        if not target_prompt.strip():
            raise ValueError("the target prompt is empty: say what the edited image should show")
        options = {name: parse_options(items, f" of --{name.replace('_', '-')}") for name, items in
                   (("method_option", method_option), ("decoder_option", decoder_option), ("mode_option", mode_option))}
        check_names(sampler, method, decoder, guidance, options["method_option"])
        mode_config = EDIT_MODES.resolve(mode, options["mode_option"])  # bad modes and options refused before loading
        user_mask = load_mask(mask) if mask is not None else None
        pipe = load(model, dtype=dtype, device=device)
        images = read_images(pipe, [image], resize)
        result = run_edit(pipe, images, source_prompt, target_prompt, method=method, decoder=decoder, mode=mode_config,
                          mask=user_mask, sampler=sampler, steps=steps, guidance=guidance,
                          method_options=options["method_option"], decoder_options=options["decoder_option"],
                          progress=True)
        report = {"model": model, "dtype": dtype, "image": str(image), "source_prompt": source_prompt,
                  "target_prompt": target_prompt, **result.report}
        mask_image = result.image_mask[0, 0].numpy()
        with staged_folder(out) as folder:
            result.edited_images[0].save(folder / "edited.png")
            result.reconstruction_images[0].save(folder / "reconstruction.png")
            tensor_to_pil(result.image_mask[:1].expand(-1, 3, -1, -1) * 2 - 1)[0].save(folder / "mask.png")
            save_comparison(folder / "comparison.png", [
                ("input", tensor_to_pil(images)[0]), ("reconstruction", result.reconstruction_images[0]),
                ("edited", result.edited_images[0]), (f"mask ({result.mask_source})", mask_image)])
            write_json(folder / "report.json", report)
        echo_report(report)
