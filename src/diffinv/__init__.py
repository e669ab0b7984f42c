"""diffinv: find the noise and the latent behind an image for latent diffusion models.

The public names below are imported on first use, so `import diffinv` (and the CLI's start) stays
light until a model is actually needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Autoencoder": "diffinv.models.autoencoder",
    "DECODER_METHODS": "diffinv.decoder",
    "EditResult": "diffinv.applications.editing",
    "edit": "diffinv.applications.editing",
    "invert_decoder": "diffinv.decoder",
    "Denoiser": "diffinv.models.denoiser",
    "METHODS": "diffinv.inversion",
    "InversionDiverged": "diffinv.inversion",
    "InversionResult": "diffinv.inversion",
    "invert_latent": "diffinv.inversion",
    "ModelNotFoundError": "diffinv.models.loading",
    "load": "diffinv.models.loading",
    "nmse": "diffinv.utils.metrics",
    "psnr": "diffinv.utils.metrics",
    "ssim": "diffinv.utils.metrics",
    "Generation": "diffinv.pipeline",
    "generate": "diffinv.pipeline",
    "invert": "diffinv.pipeline",
    "reconstruct": "diffinv.pipeline",
    "score": "diffinv.pipeline",
    "seeded_noise": "diffinv.pipeline",
    "sample": "diffinv.sampler.sampling",
    "SCHEDULERS": "diffinv.sampler.schedule",
    "make_schedule": "diffinv.sampler.schedule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'diffinv' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
