"""Benchmark method labels: a registered inversion method or a named preset of one, options after a colon.

Every benchmark reads its method labels here, so ``exact-aa:stall=20`` means the same in each of them and a
bad label or option is refused before any image is generated.
"""

from __future__ import annotations

from typing import Any

from diffinv.inversion import METHODS
from diffinv.utils.specs import parse_spec

#: Benchmark method labels -> (registered method, options). The tolerance of the iterative ones is `tol`.
METHOD_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "exact-gd": ("exact", {"solver": "gradient"}),
    "exact-aa": ("exact", {"anderson": 3, "stall": 10, "sweeps": 3, "fine_steps": 2}),
    # Not run by default: gradient descent with Anderson, for ill-conditioned steps (large jumps to sigma ~ 0).
    "exact-gd-aa": ("exact", {"solver": "gradient", "rho": 0.7, "anderson": 8, "stall": 30, "sweeps": 2, "fine_steps": 2}),
    # exact-aa, and Levenberg-Marquardt for the steps it leaves above the tolerance.
    "exact-lm": ("exact", {"anderson": 3, "stall": 10, "sweeps": 3, "fine_steps": 2, "refine": "lm"}),
    # The same with full Jacobians (one network call per latent entry per iteration): for small latents.
    "exact-lm-dense": ("exact", {"anderson": 3, "stall": 10, "sweeps": 3, "fine_steps": 2, "refine": "lm-dense"}),
}
#: Methods whose per-step tolerance a benchmark's `tol` sets.
TOLERANT = ("exact", "fixed-point")


def resolve_method(label: str, tol: float | None = None) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``"name:key=value,..."`` -> (registered method, options), checked now rather than halfway
    through. `name` is a registered method or a preset (``exact-aa``); the label's options override the
    preset's, and `tol` (when given) is the per-step tolerance of the iterative methods."""
    name, extra = parse_spec(label)
    if name in METHOD_PRESETS:
        method, options = METHOD_PRESETS[name]
    elif name in METHODS:
        method, options = name, {}
    else:
        known = ", ".join(list(METHODS) + list(METHOD_PRESETS))
        raise ValueError(f"unknown inversion method {name!r}; choose one of {known}")
    if method in TOLERANT and tol is not None:
        options = {**options, "tol": tol}
    options = {**options, **extra}
    METHODS[method](**options)  # refuse bad options before any work
    return method, options
