"""Where the networks run and what happens when they do not fit: device names, half-precision overflow
and out-of-memory turned into one-line errors that say which option helps."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: The dtypes whose overflow `check_finite` reports (float32 runs report through the inversion's own checks).
HALF_DTYPES = (torch.float16, torch.bfloat16)


class OutOfMemory(MemoryError):
    """An allocation failed: the message says what was being allocated and which option lowers it."""


class HalfPrecisionOverflow(FloatingPointError):
    """A network running in float16 or bfloat16 produced NaN or infinite values."""


def _gpu_available() -> bool:
    return torch.cuda.is_available()


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """The torch device for `name` ("cpu", "cuda", "cuda:N", "mps"; None: the first GPU when there is one,
    else the CPU). A device this machine does not have raises ValueError with a one-line reason."""
    if name is None or str(name).strip() == "":
        if _gpu_available():
            return torch.device("cuda", 0)
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    text = str(name).strip().lower()
    match = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", text)
    if match is None:
        raise ValueError(f"unknown device {str(name)!r}; choose cpu, cuda, cuda:N or mps")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index not in (None, "0"):
            raise ValueError(f"device {text!r} is not available: the CPU is 'cpu'")
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise ValueError(f"device {text!r} is not available: this machine has no Apple MPS backend")
        return torch.device("mps")
    if not _gpu_available():
        raise ValueError(f"device {text!r} is not available: torch sees no CUDA GPU on this machine")
    count = torch.cuda.device_count()
    number = int(index or 0)
    if number >= count:
        raise ValueError(f"device {text!r} is not available: this machine has {count} CUDA device"
                         f"{'s' if count != 1 else ''} (cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    return torch.device("cuda", number)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocation failure: CUDA's OutOfMemoryError, MemoryError, or the CPU allocator's
    RuntimeError."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


@contextmanager
def out_of_memory_hint(what: str, lower: str) -> Iterator[None]:
    """Turn an allocation failure inside the block into `OutOfMemory`: "out of memory while {what}; {lower}".
    `what` names what was being allocated, `lower` the options that make it smaller."""
    try:
        yield
    except OutOfMemory:
        raise
    except BaseException as error:
        if not is_out_of_memory(error):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(f"out of memory while {what}; {lower}") from error


def check_finite(tensor: torch.Tensor, dtype: torch.dtype, what: str) -> torch.Tensor:
    """Return `tensor`, or raise HalfPrecisionOverflow naming `dtype` when a half-precision computation
    (`dtype` float16 or bfloat16) gave NaN or inf values."""
    if dtype in HALF_DTYPES and not bool(torch.isfinite(tensor).all()):
        name = str(dtype).removeprefix("torch.")
        raise HalfPrecisionOverflow(f"{what} overflowed in {name} (NaN or infinite values); run it in float32 (--dtype float32)")
    return tensor
