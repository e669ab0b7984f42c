"""Output folders that appear whole or not at all, and the files diffinv writes into them."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


class OutputError(ValueError):
    """An output folder that cannot be written; the message names the folder the user gave."""


def _scratch_beside(target: Path) -> Path:
    try:
        if target.exists() and not target.is_dir():
            raise OutputError(f"cannot write to {target}: it exists and is not a folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as error:
        raise OutputError(f"cannot write to {target}: {error.strerror or error}") from None


def check_writable(target: str | Path) -> None:
    """Refuse, before any work, an output folder that could not be written (read-only place, a file)."""
    scratch = _scratch_beside(Path(target))
    scratch.rmdir()


@contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """Yield a scratch folder beside `target`; on success its files move into `target`, on error it vanishes."""
    target = Path(target)
    scratch = _scratch_beside(target)
    try:
        yield scratch
        try:
            target.mkdir(exist_ok=True)
            for item in scratch.iterdir():
                os.replace(item, target / item.name)
        except OSError as error:
            raise OutputError(f"cannot write to {target}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def save_tensor(path: str | Path, key: str, tensor: torch.Tensor) -> None:
    """Write one float32 tensor under `key` to a safetensors file."""
    save_file({key: tensor.detach().float().cpu().contiguous()}, str(path))


def load_tensor(path: str | Path, key: str) -> torch.Tensor:
    """Read the tensor stored under `key` (or the only tensor) from a safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        tensors = load_file(str(path))
    except SafetensorError:
        raise ValueError(f"{path} is not a safetensors file") from None
    if key in tensors:
        return tensors[key]
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    raise KeyError(f"{path} has no tensor {key!r} (it has {', '.join(tensors)})")


def write_json(path: str | Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
