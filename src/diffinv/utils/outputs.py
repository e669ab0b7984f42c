"""Output folders that appear whole or not at all, and the files diffinv writes into them."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
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


def check_output_file(path: str | Path, option: str = "--json") -> None:
    """Refuse, before any work, an output file that could not be written: a folder, a read-only file or place."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{option} {path}: the file is read-only")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise OutputError(f"{option} {path}: cannot write there ({error.strerror or error})") from None


def file_mode() -> int:
    """The permissions a new file gets under the process's umask (0644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomically(path: Path, save: Callable[[Path], None]) -> None:
    """`save(temporary path)` beside `path`, then rename it into place, with the umask's permissions."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(descriptor)
    try:
        save(Path(temporary))
        os.chmod(temporary, file_mode())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


#: What a diffinv run writes into its output folder; a rerun into the same folder removes the ones it did not write.
RUN_FILES = ("*.png", "*.safetensors", "report.json")


@contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """Yield a scratch folder beside `target`; on success its files move into `target`, on error it vanishes.

    When `target` holds an earlier run (a report.json), that run's files which this one did not write
    (an old noise.png, say) are removed, so the folder never mixes two runs; other files stay.
    """
    target = Path(target)
    scratch = _scratch_beside(target)
    try:
        yield scratch
        try:
            target.mkdir(exist_ok=True)
            written = {item.name for item in scratch.iterdir()}
            if (target / "report.json").is_file():
                for pattern in RUN_FILES:
                    for stale in target.glob(pattern):
                        if stale.name not in written and stale.is_file():
                            stale.unlink()
            for item in scratch.iterdir():
                os.replace(item, target / item.name)
        except OSError as error:
            raise OutputError(f"cannot write to {target}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write tensors to a safetensors file with the umask's permissions (safetensors alone writes 0600)."""
    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, file_mode())


def save_tensor(path: str | Path, key: str, tensor: torch.Tensor) -> None:
    """Write one float32 tensor under `key` to a safetensors file."""
    save_tensors(path, {key: tensor.detach().float().cpu().contiguous()})


def load_tensor(path: str | Path, key: str) -> torch.Tensor:
    """Read the tensor stored under `key` from a safetensors file; a file without it is refused, naming the
    keys it has (a noise file is never taken for a latent)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        raise ValueError(f"{path} is not a safetensors file (or it is damaged)") from None
    if key in tensors:
        return tensors[key]
    raise KeyError(f"{path} has no tensor {key!r} (it has {', '.join(map(repr, tensors)) or 'none'}); "
                   f"save it under the key {key!r}")


def write_json(path: str | Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
