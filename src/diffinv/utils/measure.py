"""Measured cost of a piece of work: wall seconds and peak memory in bytes.

Seconds are always measured. Peak memory only while the process asks for it (`tracking_memory()`, or
`track_memory()` for a process the caller owns: the `diffinv` command and the benchmarks do), because
measuring it touches the whole process: it resets the process's peak counters (Linux `VmHWM`, CUDA's peak
statistics), collects garbage and hands freed heap back to the OS before each outermost measured block.
Otherwise `peak_memory_bytes` is None and the caller's process is left as it was.

Peak memory is measured, not estimated: on CUDA the allocator's peak; on the CPU the process's peak
resident set (Linux `VmHWM`, reset through `/proc/self/clear_refs` at the start) minus the resident
set at the start, so the number is what the measured work added. Freed heap is returned to the OS
before each outermost measurement (`release_memory`), or memory an earlier run left cached would hide
this one's; blocks measured inside another skip it, so a stage costs the same whether it runs alone or
inside a larger call. Tensors are freed by reference counting, so the collection is of the young
generations only (microseconds; a full one costs 0.3 s with diffusers and transformers loaded).

What `seconds` covers, at every level: the wall time of the block's own work, from its first statement
to its last, never the collection before it.
"""

from __future__ import annotations

import ctypes
import gc
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def release_memory(full: bool = False) -> None:
    """Collect garbage (the young generations, or all with `full`) and hand freed heap pages back to the
    OS (glibc `malloc_trim`), so that a following measurement's RSS growth is its own and not hidden by
    memory an earlier run freed."""
    gc.collect(2 if full else 1)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _reset_cpu_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Cost:
    """What a measured block cost; filled in when the block exits (peak memory None when not tracked)."""

    seconds: float = 0.0
    peak_memory_bytes: int | None = None


_depth = 0  # how many measured blocks are open
_tracking = False  # whether peak memory is measured


def track_memory(enabled: bool = True) -> None:
    """Measure peak memory from now on in this process, or stop (see the module docstring for what it touches)."""
    global _tracking
    _tracking = enabled


@contextmanager
def tracking_memory() -> Iterator[None]:
    """Measure peak memory inside the block (see the module docstring for what that touches); as before after it."""
    global _tracking
    previous, _tracking = _tracking, True
    try:
        yield
    finally:
        _tracking = previous


def largest(*peaks: int | None) -> int | None:
    """The largest of the measured peaks (None when none was measured)."""
    known = [peak for peak in peaks if peak is not None]
    return max(known) if known else None


@contextmanager
def measure(device: torch.device | str = "cpu") -> Iterator[Cost]:
    """Time the block and, while memory is tracked, record its peak memory (CUDA allocator peak, else peak
    RSS growth)."""
    global _depth
    device = torch.device(device)
    cost = Cost()
    if not _tracking:
        start = time.perf_counter()
        try:
            yield cost
        finally:
            cost.seconds = time.perf_counter() - start
        return
    if _depth == 0:
        release_memory()
    cuda = device.type == "cuda" and torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        _reset_cpu_peak()
        base = _status_kib("VmRSS") or 0
    start = time.perf_counter()
    _depth += 1
    try:
        yield cost
    finally:
        _depth -= 1
        if cuda:
            torch.cuda.synchronize(device)
            cost.peak_memory_bytes = int(torch.cuda.max_memory_allocated(device) - base)
        else:
            peak = _status_kib("VmHWM") or base
            cost.peak_memory_bytes = max(0, peak - base) * 1024
        cost.seconds = time.perf_counter() - start
