"""Timing helpers of the benchmarks that compare loops making the same network calls: wall and CPU seconds of a
piece of work, and the seconds spent inside a module's forward calls."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


def sync(device: torch.device) -> None:
    """Wait for the work queued on `device` (CUDA), so a timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work: Callable[[], Any]) -> tuple[Any, float, float]:
    """(work(), wall seconds, this process's CPU seconds): on a shared CPU the second measures the work
    itself when other processes take turns on the cores."""
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    result = work()
    sync(device)
    return result, time.perf_counter() - start, time.process_time() - cpu


class NetworkClock:
    """Wall seconds spent inside a module's forward calls (hooks on the module), so a loop's time outside the
    network, the part that differs between two loops making the same calls, can be read off."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.device, self.seconds, self._start = device, 0.0, 0.0
        self._hooks = [module.register_forward_pre_hook(self._enter), module.register_forward_hook(self._leave)]

    def _enter(self, module: torch.nn.Module, args: Any) -> None:
        sync(self.device)
        self._start = time.perf_counter()

    def _leave(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        sync(self.device)
        self.seconds += time.perf_counter() - self._start

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
