"""What every `diffinv` command shares: the Typer apps, option help, one-line user errors, image I/O."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from diffinv.utils.specs import SEED_RANGE

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Find the noise and the latent behind an image for latent diffusion models.",
)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print one table and write JSON.")
app.add_typer(bench_app, name="bench")


def _show_version(value: bool) -> None:
    if value:
        from diffinv import __version__

        typer.echo(f"diffinv {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True, help="print the version and exit")] = False,
) -> None:
    """Find the noise and the latent behind an image for latent diffusion models."""


watermark_app = typer.Typer(no_args_is_help=True, help="Tree-Ring watermarks: embed in the noise, detect through inversion.")
app.add_typer(watermark_app, name="watermark")

MODEL_HELP = "'tiny' (bundled), a local diffusers folder, or a hub id"
#: The repeatable KEY=VALUE options of every command that inverts (`--method-option`, `--decoder-option`).
MethodOptions = Annotated[Optional[list[str]], typer.Option("--method-option", help="KEY=VALUE for the method, repeatable")]
DecoderOptions = Annotated[Optional[list[str]], typer.Option("--decoder-option", help="KEY=VALUE for the decoder, repeatable: iterations=300, clipped=false for a float image that was never clipped to [-1, 1], progress=false to hide its bar (docs/decoder-inversion.md)")]


def writable_file(param: typer.CallbackParam, value: Optional[Path]) -> Optional[Path]:
    """Option callback: refuse, while the arguments are parsed (before any work), an output file that could
    not be written."""
    if value is not None:
        from diffinv.utils.outputs import OutputError, check_output_file

        try:
            check_output_file(value, param.opts[0] if param.opts else "output")
        except OutputError as error:
            raise typer.BadParameter(str(error).removeprefix(f"{param.opts[0] if param.opts else 'output'} ")) from None
    return value


#: A benchmark's `--json` rows file, checked before the benchmark runs.
JsonOutput = Annotated[Optional[Path], typer.Option("--json", help='write {"rows": [...]} here', callback=writable_file)]

#: Bounds for every --seed option: the seeds torch's generator takes.
SEED_BOUNDS = {"min": SEED_RANGE[0], "max": SEED_RANGE[1]}

from diffinv.sampler.registry import sampler_help  # noqa: E402  (the registered names; imports neither torch nor diffusers)

SAMPLER_HELP = sampler_help()
DTYPE_HELP = "float32, bfloat16 or float16: the dtype the model's weights run in (latents and solver state stay float32)"
DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: the first GPU when there is one, else the CPU)"


@contextmanager
def user_errors() -> Iterator[None]:
    """Every command's body runs in this: the errors a user can cause become a one-line message and exit
    status 2; and peak memory is measured (the command owns its process, see `diffinv.utils.measure`)."""
    from diffinv.decoder import DecoderInversionDiverged
    from diffinv.inversion import InversionDiverged
    from diffinv.models.device import OutOfMemory, out_of_memory_hint
    from diffinv.models.loading import ModelNotFoundError
    from diffinv.utils.images import ImageError
    from diffinv.utils.measure import track_memory

    track_memory()
    try:
        with out_of_memory_hint("running the model", "lower --batch-size or --num-images, use --dtype bfloat16 (float16 "
                                "on a GPU), a smaller image, or --decoder-option chunk_size=1"):
            yield
    except (OutOfMemory, 
        ImageError, ModelNotFoundError, InversionDiverged, DecoderInversionDiverged, FloatingPointError, FileNotFoundError,
        KeyError, ValueError,
    ) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2) from None


def split_list(text: str, separator: str = ",") -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c'] (empty items dropped); prompts, which hold commas, use separator '|'."""
    return [item.strip() for item in text.split(separator) if item.strip()]


def whole_numbers(text: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16], with a clear error for anything else."""
    try:
        return [int(item) for item in split_list(text)]
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of whole numbers") from None


def finite_numbers(text: str) -> list[float]:
    """'1,3,7.5' -> [1.0, 3.0, 7.5], with a clear error for anything else (NaN and infinity included)."""
    try:
        values = [float(item) for item in split_list(text)]
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of numbers") from None
    if not all(math.isfinite(value) for value in values):
        raise ValueError(f"{text!r}: every value must be a finite number")
    return values


def emit_rows(table: str, rows: list[dict[str, Any]], json_path: Path | None, model: str) -> None:
    """Print a benchmark's table; with --json also write its rows, each tagged with the model."""
    from diffinv.bench.tables import write_rows

    typer.echo(table)
    if json_path:
        write_rows(json_path, [{"model": model, **row} for row in rows])


def echo_report(report: dict[str, Any]) -> None:
    """Print the report as JSON, one key per line (a configuration or list on its line); the per-step residual
    list stays in report.json only."""
    shown = {key: value for key, value in report.items() if key != "step_residuals"}
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in shown.items()]
    typer.echo("{\n" + ",\n".join(lines) + "\n}")


def image_names(count: int, stem: str) -> list[str]:
    """`stem.png` for one image, `stem_0.png`, `stem_1.png`, ... for a batch."""
    return [f"{stem}.png"] if count == 1 else [f"{stem}_{index}.png" for index in range(count)]


def save_images(folder: Path, images, stem: str) -> None:
    for name, image in zip(image_names(len(images), stem), images):
        image.save(folder / name)


def check_names(sampler: str, method, decoder, guidance: float = 1.0,
                method_options: dict[str, Any] | None = None) -> None:
    """Refuse unknown sampler, method or decoder names, bad method options and an unusable guidance before
    any model is loaded."""
    from diffinv.decoder import DECODERS
    from diffinv.inversion import METHODS
    from diffinv.models.denoiser import check_guidance
    from diffinv.sampler.schedule import check_sampler_name

    check_sampler_name(sampler)
    METHODS.resolve(method, method_options)
    DECODERS.resolve(decoder)
    check_guidance(guidance)


def read_images(pipe, paths: list[Path], resize: bool):
    """Image files as one batch for `pipe` (notes about conversions go to stderr)."""
    from diffinv.pipeline import default_image_side
    from diffinv.utils.images import load_images

    size = default_image_side(pipe)
    loaded = load_images(paths, pipe.vae_scale_factor, size=(size, size), resize=resize)
    for note in loaded.notes:
        typer.echo(f"note: {note}", err=True)
    return loaded.tensor


def save_comparison(path: Path, panels: list[tuple[str, object]]) -> None:
    """One row of labelled images (PIL images or [H, W] arrays shown in gray) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.5))
    for ax, (title, picture) in zip(axes, panels):
        ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_noise_comparison(path: Path, true_noise, recovered) -> None:
    """The first image's true and recovered noise side by side (first latent channel, +-3 mapped to black/white)
    and their difference magnified 10x: what `invert --reference` recovered, at a glance."""
    true_map, found_map = (noise[0, 0].float().cpu().numpy() for noise in (true_noise, recovered))
    scale = lambda values: ((values + 3) / 6).clip(0, 1)  # noqa: E731
    save_comparison(path, [("true noise", scale(true_map)), ("recovered", scale(found_map)),
                           ("difference x10", scale(10 * (found_map - true_map)))])
