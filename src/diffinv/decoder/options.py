"""The decoder-inversion methods, their options and defaults (the paper's), and the learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import torch

from diffinv.decoder.cocoercivity import inertial_km_lambda_max
from diffinv.utils.specs import check_option_types

DECODER_METHODS = ("encoder", "forward-step", "inertial-km", "gradient-free", "gradient")

#: Options every method accepts.
COMMON_OPTIONS: dict[str, Any] = {
    "clipped": True,  # the image was clipped to [-1, 1] (every image file is): a decoding past a bound the pixel sits at fits
    "rounded": False,  # the image was rounded to 8 bits: a pixel fits within half a step of its value (measured: no gain)
    "chunk_size": None,  # frames per chunk; None = all at once
    "divergence_factor": 10.0,
    "on_divergence": "raise",  # or "warn"
    "tol": None,  # stop a chunk early once its RMS residual (latent for gradient-free rules, image for "gradient") is <= tol
    "progress": False,  # tqdm bar over the iterations
}

#: Per-method options and their defaults.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "encoder": {},
    "forward-step": {"iterations": 100, "rho": 0.5},
    "inertial-km": {"iterations": 100, "alpha": 0.2, "lam": 0.5, "beta": 0.5},
    "gradient-free": {
        "iterations": 100,
        "lr": 0.01,
        "schedule": True,
        "horizon": 100,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": None,  # 1e-4 for a float16 autoencoder, else 1e-8
    },
    "gradient": {"iterations": 100, "lr": 0.1, "schedule": True, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
}


def check_decoder_name(name: str) -> str:
    """Return `name` if it is a decoder inversion method, else raise a ValueError listing them."""
    if name not in DECODER_METHODS:
        raise ValueError(f"unknown decoder method {name!r}; choose one of {', '.join(DECODER_METHODS)}")
    return name


def resolve_options(method: str, options: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    check_decoder_name(method)
    accepted = {**COMMON_OPTIONS, **METHOD_DEFAULTS[method]}
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for decoder method {method!r}; accepted: {', '.join(sorted(accepted))}")
    check_option_types(f"decoder method {method!r}", {**accepted, "eps": 1e-8, "tol": 1e-3, "chunk_size": 1}, options)
    resolved = {**accepted, **options}
    if method == "gradient-free" and resolved["eps"] is None:
        resolved["eps"] = 1e-4 if dtype == torch.float16 else 1e-8
    if int(resolved.get("iterations", 0)) < 0:
        raise ValueError("iterations must be >= 0")
    if resolved["chunk_size"] is not None and int(resolved["chunk_size"]) < 1:
        raise ValueError("chunk_size must be >= 1 or None")
    if resolved["on_divergence"] not in ("raise", "warn"):
        raise ValueError("on_divergence must be 'raise' or 'warn'")
    for name in ("rho", "lam", "beta", "lr"):
        if name in resolved and not float(resolved[name]) > 0:
            raise ValueError(f"{name} must be > 0, got {resolved[name]}")
    if method == "inertial-km":
        inertial_km_lambda_max(float(resolved["alpha"]))  # validates 0 <= alpha < 1
    return resolved


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
