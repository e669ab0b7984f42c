"""Loading a supported diffusers pipeline (SD 1.x/2.x, SDXL, SD3, Flux): the bundled model, a local folder, or a hub id."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

BUNDLED = {"tiny": "tiny"}
#: dtype names the CLI and the benchmarks accept.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelNotFoundError(FileNotFoundError):
    """The named model is neither bundled, nor a diffusers folder, nor in the local hub cache."""


def bundled_path(name: str) -> Path:
    """Folder of a bundled model inside the installed package."""
    return Path(str(importlib.resources.files("diffinv") / "weights" / BUNDLED[name]))


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from its name ("float32", "float16", "bfloat16"), or the dtype itself."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve(name_or_path: str | Path) -> Path | str:
    """Where `name_or_path` lives: a bundled model's folder, a local folder, or a hub id (returned as is)."""
    text = str(name_or_path)
    if text in BUNDLED:
        folder = bundled_path(text)
        if not (folder / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"the bundled model {text!r} is not installed at {folder}; train it with `python -m diffinv.train`"
            )
        return folder
    path = Path(text).expanduser()
    looks_local = path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1
    if looks_local:
        if not path.is_dir():
            raise ModelNotFoundError(f"model folder {text!r} does not exist")
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(f"{text!r} is not a diffusers pipeline folder (no model_index.json in it)")
        return path
    return text


#: The pipeline classes diffinv inverts (the `_class_name` of a folder's model_index.json).
SUPPORTED_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "StableDiffusion3Pipeline", "FluxPipeline")


#: Components an SD3 folder may leave out (saved as null or not at all): then loaded as None.
OPTIONAL_SD3_PARTS = ("text_encoder_3", "tokenizer_3", "image_encoder", "feature_extractor")


def diffusers_config(source: Path | str) -> dict:
    """The model_index.json of `source` (a folder or a cached hub id)."""
    from diffusers import DiffusionPipeline

    return dict(DiffusionPipeline.load_config(str(source)))


def pipeline_class(source: Path | str, config: dict | None = None) -> type:
    """The diffusers pipeline class named in `source`'s model_index.json (`config`, when already read), if
    diffinv supports it."""
    import diffusers

    config = diffusers_config(source) if config is None else config
    name = config.get("_class_name", "")
    if name not in SUPPORTED_PIPELINES:
        raise ModelNotFoundError(f"{source} holds a {name or 'unnamed'} pipeline; diffinv supports {', '.join(SUPPORTED_PIPELINES)}")
    return getattr(diffusers, name)


def load(
    name_or_path: str | Path = "tiny",
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device | None = None,
):
    """A `StableDiffusionPipeline`, `StableDiffusionXLPipeline`, `StableDiffusion3Pipeline` or `FluxPipeline`
    (the class model_index.json names) from "tiny" (bundled), a local diffusers folder, or a hub id.

    Hub ids load from the local Hugging Face cache only when the hub cannot be reached; a missing
    one raises ModelNotFoundError that names it. Device defaults to CUDA when available.
    """
    source = resolve(name_or_path)
    dtype = parse_dtype(dtype)
    try:
        config = diffusers_config(source)
        kind = pipeline_class(source, config)
        extra = dict(safety_checker=None, requires_safety_checker=False) if kind is StableDiffusionPipeline else {}
        if kind.__name__ == "StableDiffusion3Pipeline":  # SD3 runs without T5 (and the IP-adapter parts) when absent
            extra = {name: None for name in OPTIONAL_SD3_PARTS if not (config.get(name) or [None])[0]}
        pipe = kind.from_pretrained(source, dtype=dtype, **extra)
    except OSError as error:
        if isinstance(source, Path):
            raise ModelNotFoundError(f"could not load the pipeline in {source}: {error}") from error
        raise ModelNotFoundError(
            f"model {source!r} is not on this machine and could not be downloaded "
            f"(no network or no such hub id); pass a local diffusers folder or 'tiny'"
        ) from error
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
