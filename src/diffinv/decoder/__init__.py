"""Layer 4, inversion of the decoder (x -> z_0): the encoder, gradient descent through the decoder
(`gradient`), and the gradient-free family (`gradient_free`: forward step, inertial KM, gradient-free
Adam) on one iteration loop (`iteration`), with one result type (`result`), the methods' options
(`options`), what an image file allows the decoding to be (`target`: clipped, rounded) and the measured
convergence condition (`cocoercivity`). `invert_decoder` (in `driver`) is
the entry point. Imports `diffinv.models` and `diffinv.utils`."""

from diffinv.decoder.driver import invert_decoder
from diffinv.decoder.options import (
    COMMON_OPTIONS,
    DECODER_METHODS,
    METHOD_DEFAULTS,
    check_decoder_name,
    cosine_warmup_lr,
)
from diffinv.decoder.result import DecoderInversion, DecoderInversionDiverged, StepCondition

__all__ = ["COMMON_OPTIONS", "DECODER_METHODS", "METHOD_DEFAULTS", "DecoderInversion", "DecoderInversionDiverged",
           "StepCondition", "check_decoder_name", "cosine_warmup_lr", "invert_decoder"]
