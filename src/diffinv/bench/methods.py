"""Benchmark method labels: a sampler-inversion method or a preset of one, options after a colon.

Every benchmark reads its method labels here (`diffinv.inversion.METHODS`, whose presets include the
benchmarks' `exact-aa`, `exact-gd`, `exact-gd-aa`, `exact-lm`, `exact-lm-dense` and the paper's `exact-paper`), so
``exact-aa:stall=20`` means the same in each of them and a bad label or option is refused before any image is
generated.
"""

from __future__ import annotations

from diffinv.inversion import METHODS, Method

#: Methods whose per-step tolerance a benchmark's `tol` sets.
TOLERANT = ("exact", "fixed-point")


def resolve_method(label: str, tol: float | None = None) -> Method:
    """``"name"`` or ``"name:key=value,..."`` -> the method's configuration, checked now rather than halfway
    through; `tol` (when given) is the per-step tolerance of the iterative methods, unless the label sets it."""
    method = METHODS.resolve(label)
    if method.name in TOLERANT and tol is not None and "tol=" not in label:
        method = method.replace(tol=tol)
    return method
