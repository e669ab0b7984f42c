"""The decoder-inversion methods' names (their options: `methods.py`) and the learning-rate schedule."""

from __future__ import annotations

import math
from diffinv.decoder.methods import DECODERS

def check_decoder_name(name: str) -> str:
    """Return `name` if it names a decoder inversion method, else raise a ValueError listing them."""
    return DECODERS.check_name(name)


def cosine_warmup_lr(step: int, lr: float, horizon: int, freeze: bool) -> float:
    """Learning rate at `step` (0-based): linear warm-up over horizon // 10 steps, then cosine to 0 at `horizon`.

    With `freeze`, the rate stops changing from 80% of the horizon on (the gradient-free schedule);
    without, steps past the horizon get rate 0.
    """
    horizon = max(1, horizon)
    warmup = horizon // 10
    if freeze:
        step = min(step, max(0, math.ceil(0.8 * horizon) - 1))
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (horizon - warmup))
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))
