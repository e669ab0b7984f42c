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


@contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """Yield a scratch folder beside `target`; on success its files move into `target`, on error it vanishes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield scratch
        target.mkdir(exist_ok=True)
        for item in scratch.iterdir():
            os.replace(item, target / item.name)
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
