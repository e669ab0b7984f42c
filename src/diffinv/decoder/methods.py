"""The decoder-inversion methods as typed, immutable configurations (`diffinv.utils.config.Config`).

Fields are the options, with their defaults (the paper's) written here once and checked on construction;
`invert_decoder` runs whichever one it is given (a name is shorthand for a class's defaults). Every method
shares how the image is read (`clipped`, `rounded`), how frames are chunked, and how divergence is handled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from diffinv.utils.config import Config, Registry, bounded


@dataclass(frozen=True, kw_only=True)
class DecoderMethod(Config):
    """What every decoder-inversion method takes."""

    kind = "decoder method"
    clipped: bool = bounded(True, help="the image was clipped to [-1, 1] (every image file is): a decoding past a "
                                       "bound the pixel sits at fits it; False for float images never clipped")
    rounded: bool = bounded(False, help="the image was rounded to 8 bits: a pixel fits within half a step of its value")
    chunk_size: int | None = bounded(None, min=1, help="frames inverted at once (None: all); memory, not results")
    divergence_factor: float = bounded(10.0, above=1.0, help="a residual or latent this many times its start diverged")
    tol: float | None = bounded(None, above=0.0, help="stop a chunk once its RMS residual is at most this")

    def resolved(self, dtype: torch.dtype) -> dict[str, Any]:
        """The options as the iteration reads them, with the defaults that depend on the autoencoder's dtype."""
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class Encoder(DecoderMethod):
    """z = E(x), the usual shortcut (E is only a right inverse of D)."""

    name = "encoder"


@dataclass(frozen=True, kw_only=True)
class ForwardStep(DecoderMethod):
    """z <- z - rho (E(D(z)) - E(x)) from E(x); converges when the map is beta-cocoercive and rho < 2 beta."""

    name = "forward-step"
    iterations: int = bounded(100, min=0, help="iterations")
    rho: float = bounded(0.5, above=0.0, help="step size")


@dataclass(frozen=True, kw_only=True)
class InertialKM(DecoderMethod):
    """Inertial Krasnosel'skii-Mann: y = z_k + alpha (z_k - z_{k-1}), z_{k+1} = y - 2 lam beta T(y)."""

    name = "inertial-km"
    iterations: int = bounded(100, min=0, help="iterations")
    alpha: float = bounded(0.2, min=0.0, below=1.0, help="inertia")
    lam: float = bounded(0.5, above=0.0, help="relaxation lambda")
    beta: float = bounded(0.5, above=0.0, help="the cocoercivity assumed")


@dataclass(frozen=True, kw_only=True)
class GradientFree(DecoderMethod):
    """The paper's practical method: Adam driven by E(D(z)) - E(x) in place of a gradient, lr with a cosine
    schedule (10% warm-up, frozen from 80% of `horizon`)."""

    name = "gradient-free"
    iterations: int = bounded(100, min=0, help="iterations")
    lr: float = bounded(0.01, above=0.0, help="learning rate")
    schedule: bool = bounded(True, help="cosine schedule with warm-up (False: constant lr)")
    horizon: int = bounded(100, min=1, help="iterations the schedule spans at most")
    beta1: float = bounded(0.9, min=0.0, below=1.0, help="Adam's beta1")
    beta2: float = bounded(0.999, min=0.0, below=1.0, help="Adam's beta2")
    eps: float | None = bounded(None, above=0.0, help="Adam's eps (None: 1e-4 for a float16 autoencoder, else 1e-8)")

    def resolved(self, dtype: torch.dtype) -> dict[str, Any]:
        options = asdict(self)
        if options["eps"] is None:
            options["eps"] = 1e-4 if dtype == torch.float16 else 1e-8
        return options


@dataclass(frozen=True, kw_only=True)
class Gradient(DecoderMethod):
    """The baseline: Adam on ||D(z) - x||^2 by back-propagation through D (always in float32)."""

    name = "gradient"
    iterations: int = bounded(100, min=0, help="iterations")
    lr: float = bounded(0.1, above=0.0, help="learning rate")
    schedule: bool = bounded(True, help="cosine schedule with 10% warm-up, decaying to 0 (False: constant lr)")
    beta1: float = bounded(0.9, min=0.0, below=1.0, help="Adam's beta1")
    beta2: float = bounded(0.999, min=0.0, below=1.0, help="Adam's beta2")
    eps: float = bounded(1e-8, above=0.0, help="Adam's eps")


#: The decoder-inversion methods by name.
DECODERS: Registry[DecoderMethod] = Registry("decoder method", [Encoder, ForwardStep, InertialKM, GradientFree, Gradient])
DECODER_METHODS = tuple(DECODERS.names())
