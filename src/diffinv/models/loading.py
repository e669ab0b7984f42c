"""Loading a supported diffusers pipeline (SD 1.x/2.x, SDXL, SD3, Flux): the bundled model, a local folder, or a hub id."""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from diffinv.models.device import resolve_device

BUNDLED = {"tiny": "tiny"}
#: dtype names the CLI and the benchmarks accept.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelNotFoundError(FileNotFoundError):
    """The named model is neither bundled, nor a diffusers folder, nor in the local hub cache."""


def silence_libraries() -> list[tuple[object, int, bool]]:
    """Set diffusers' and transformers' loggers to errors only and turn their progress bars off; returns what
    they were, for `quiet_loading` to restore."""
    import diffusers.utils.logging
    import transformers.utils.logging

    saved = []
    for library in (diffusers.utils.logging, transformers.utils.logging):
        saved.append((library, library.get_verbosity(), library.is_progress_bar_enabled()))
        library.set_verbosity_error()
        library.disable_progress_bar()
    return saved


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No loader warnings or loading bars from the libraries while a pipeline loads; their settings after."""
    saved = silence_libraries()
    try:
        yield
    finally:
        for library, verbosity, bars in saved:
            library.set_verbosity(verbosity)
            if bars:
                library.enable_progress_bar()


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
                f"the bundled model {text!r} is not installed at {folder}; rebuild it with `bash scripts/train_tiny.sh` in the repository"
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


def cached_snapshot(hub_id: str) -> Path | None:
    """The local folder of `hub_id` in the Hugging Face cache, or None when it was never downloaded."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(hub_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
        return None


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within `timeout` seconds (False when offline mode is set)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def locate(name_or_path: str | Path) -> Path | str:
    """`resolve`, with a hub id replaced by its cached folder when it is on this machine; a hub id that is
    neither cached nor reachable fails at once, in one line."""
    source = resolve(name_or_path)
    if isinstance(source, Path):
        return source
    cached = cached_snapshot(source)
    if cached is not None:
        return cached
    if not hub_reachable():
        raise ModelNotFoundError(
            f"model {source!r} is not on this machine and the Hugging Face hub cannot be reached; "
            f"pass a local diffusers folder (--model PATH) or 'tiny'"
        )
    return source


def check_components(folder: Path, config: dict, optional: tuple[str, ...] = ()) -> None:
    """Refuse a pipeline folder whose model_index.json names a component that has no folder, naming it."""
    for name, spec in config.items():
        if name.startswith("_") or name in optional or not isinstance(spec, (list, tuple)) or None in spec:
            continue
        if not (folder / name).is_dir():
            raise ModelNotFoundError(
                f"{folder}: the {name!r} component is missing (model_index.json names a {spec[-1]} in {name}/, "
                f"which does not exist)"
            )


def load(
    name_or_path: str | Path = "tiny",
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device | None = None,
):
    """A `StableDiffusionPipeline`, `StableDiffusionXLPipeline`, `StableDiffusion3Pipeline` or `FluxPipeline`
    (the class model_index.json names) from "tiny" (bundled), a local diffusers folder, or a hub id.

    A hub id loads from the local Hugging Face cache when it is there, and is downloaded otherwise; one
    that is neither cached nor reachable raises ModelNotFoundError at once. The libraries' loading logs
    and bars stay off while it loads. `device`: what `resolve_device` accepts (None: the first GPU when there is one).
    """
    device = resolve_device(device)  # an unavailable device fails before anything loads
    source = locate(name_or_path)
    dtype = parse_dtype(dtype)
    try:
        with quiet_loading():
            config = diffusers_config(source)
            kind = pipeline_class(source, config)
            extra = dict(safety_checker=None, requires_safety_checker=False) if kind.__name__ == "StableDiffusionPipeline" else {}
            if kind.__name__ == "StableDiffusion3Pipeline":  # SD3 runs without T5 (and the IP-adapter parts) when absent
                extra = {name: None for name in OPTIONAL_SD3_PARTS if not (config.get(name) or [None])[0]}
            if isinstance(source, Path):
                check_components(source, config, optional=("safety_checker", "feature_extractor", "image_encoder", *extra))
            pipe = kind.from_pretrained(source, dtype=dtype, **extra)
    except OSError as error:
        if isinstance(error, ModelNotFoundError):
            raise
        if isinstance(source, Path):
            raise ModelNotFoundError(f"could not load the pipeline in {source}: {error}") from error
        raise ModelNotFoundError(
            f"model {source!r} could not be downloaded (no such hub id, or it needs a login); "
            f"pass a local diffusers folder or 'tiny'"
        ) from error
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
