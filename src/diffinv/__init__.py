"""diffinv: find the noise and the latent behind an image for latent diffusion models.

The public names below are imported on first use, so `import diffinv` (and the CLI's start) stays
light until a model is actually needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Autoencoder": "diffinv.models.autoencoder",
    "DECODER_METHODS": "diffinv.decoder",
    "DECODERS": "diffinv.decoder",
    "DecoderMethod": "diffinv.decoder",
    "Encoder": "diffinv.decoder",
    "ForwardStep": "diffinv.decoder",
    "InertialKM": "diffinv.decoder",
    "GradientFree": "diffinv.decoder",
    "Gradient": "diffinv.decoder",
    "Status": "diffinv.utils.status",
    "EditResult": "diffinv.applications.editing",
    "edit": "diffinv.applications.editing",
    "invert_decoder": "diffinv.decoder",
    "Denoiser": "diffinv.models.denoiser",
    "METHODS": "diffinv.inversion",
    "Method": "diffinv.inversion",
    "Naive": "diffinv.inversion",
    "Exact": "diffinv.inversion",
    "FixedPoint": "diffinv.inversion",
    "EasyInv": "diffinv.inversion",
    "ReNoise": "diffinv.inversion",
    "EDIT_MODES": "diffinv.applications.editing",
    "PromptToPrompt": "diffinv.applications.editing",
    "DiffEdit": "diffinv.applications.editing",
    "tracking_memory": "diffinv.utils.measure",
    "InversionDiverged": "diffinv.inversion",
    "InversionResult": "diffinv.inversion",
    "invert_sampler": "diffinv.inversion",
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
    "samplers": "diffinv.sampler.registry",
    "make_schedule": "diffinv.sampler.schedule",
}

if TYPE_CHECKING:  # the same names, for IDEs and type checkers (tests/test_layers.py keeps the two in step)
    from diffinv.applications.editing import DiffEdit, edit, EDIT_MODES, EditResult, PromptToPrompt
    from diffinv.decoder import (
        DECODER_METHODS, DecoderMethod, DECODERS, Encoder, ForwardStep, Gradient, GradientFree, InertialKM,
        invert_decoder
    )
    from diffinv.inversion import (
        EasyInv, Exact, FixedPoint, InversionDiverged, InversionResult, invert_sampler, Method, METHODS,
        Naive, ReNoise
    )
    from diffinv.models.autoencoder import Autoencoder
    from diffinv.models.denoiser import Denoiser
    from diffinv.models.loading import load, ModelNotFoundError
    from diffinv.pipeline import generate, Generation, invert, reconstruct, score, seeded_noise
    from diffinv.sampler.sampling import sample
    from diffinv.sampler.registry import samplers
    from diffinv.sampler.schedule import make_schedule
    from diffinv.utils.measure import tracking_memory
    from diffinv.utils.metrics import nmse, psnr, ssim
    from diffinv.utils.status import Status

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'diffinv' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
