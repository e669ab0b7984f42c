"""Layer 4, inversion of the decoder (x -> z_0): the encoder, gradient descent through the decoder
(`gradient`), and the gradient-free family (`gradient_free`: forward step, inertial KM, gradient-free
Adam) on one iteration loop (`iteration`), with one result type (`result`), the methods' options
(`methods`), what an image file allows the decoding to be (`target`: clipped, rounded) and the measured
convergence condition (`cocoercivity`). `invert_decoder` (in `driver`) is
the entry point. Imports `diffinv.models` and `diffinv.utils`."""

from diffinv.decoder.driver import invert_decoder
from diffinv.decoder.methods import (
    DECODER_METHODS,
    DECODERS,
    DecoderMethod,
    Encoder,
    ForwardStep,
    Gradient,
    GradientFree,
    InertialKM,
)
from diffinv.decoder.options import check_decoder_name, cosine_warmup_lr
from diffinv.decoder.result import DecoderInversion, DecoderInversionDiverged, StepCondition

__all__ = ["DECODERS", "DECODER_METHODS", "DecoderInversion", "DecoderInversionDiverged", "DecoderMethod", "Encoder",
           "ForwardStep", "Gradient", "GradientFree", "InertialKM", "StepCondition", "check_decoder_name",
           "cosine_warmup_lr", "invert_decoder"]
