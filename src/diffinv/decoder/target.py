"""What an image says about the decoding D(z) it came from: the fit every decoder inversion measures.

An image read from a file was clipped to its range and rounded to 8 bits, so it does not pin every
pixel of D(z) to one value:

- ``clipped``: where a pixel sits at -1 or 1, the decoding may have overshot the bound there; any
  D(z) beyond the bound is consistent with the file.
- ``rounded``: a stored 8-bit value k stands for every value within half a step (1/255 in [-1, 1]
  units) of it.

Together they give every pixel an interval [lo, hi] that D(z) must land in, and the fit residual is
the distance of D(z) to that interval: r = D(z) - clamp(D(z), lo, hi). With both off the interval is
the single value x and r = D(z) - x, the plain fit. The gradient method descends ||r||^2; the
gradient-free family compares E(x + r) with E(x) (x + r is D(z) with every pixel the file allows
replaced by what the file holds, so its fixed point is the true latent of a clipped, rounded image).
"""

from __future__ import annotations

import torch

#: Half an 8-bit step in [-1, 1] units: values k / 127.5 - 1 are 2 / 255 apart.
HALF_STEP = 1.0 / 255.0
#: How far outside [-1, 1] a "clipped" image may reach (float rounding of k / 127.5 - 1).
RANGE_SLACK = 1e-5
#: How far from the 8-bit grid a value may lie and still count as a stored 8-bit value.
GRID_SLACK = 1e-4


def clipped_fraction(image: torch.Tensor) -> float:
    """Share of the image's values (each colour channel of each pixel) at the bound -1 or 1."""
    x = image.detach().float()
    if x.numel() == 0:
        return 0.0
    return float(((x >= 1.0 - RANGE_SLACK) | (x <= -1.0 + RANGE_SLACK)).float().mean())


def on_8bit_grid(image: torch.Tensor) -> bool:
    """True when every value is k / 127.5 - 1 for an integer k in 0..255 (what an 8-bit file holds)."""
    x = image.detach().double()
    if not bool(((x >= -1.0 - RANGE_SLACK) & (x <= 1.0 + RANGE_SLACK)).all()):
        return False
    scaled = (x + 1.0) * 127.5
    return bool(((scaled - scaled.round()).abs() <= GRID_SLACK * 127.5).all())


class ImageTarget:
    """The per-pixel interval an image allows D(z) to be in, and the fit residual against it."""

    def __init__(self, image: torch.Tensor, clipped: bool, rounded: bool):
        x = image.float()
        if clipped:
            low, high = float(x.min()), float(x.max())
            if low < -1.0 - RANGE_SLACK or high > 1.0 + RANGE_SLACK:
                raise ValueError(
                    f"the image has values outside [-1, 1] (min {low:.4g}, max {high:.4g}), so it was never clipped; "
                    "pass clipped=False (CLI: --decoder-option clipped=false) to fit it as it is"
                )
        if rounded and not on_8bit_grid(x):
            raise ValueError(
                "the image is not on the 8-bit grid (values k / 127.5 - 1), so it was not read from an 8-bit file; "
                "pass rounded=False (CLI: --decoder-option rounded=false)"
            )
        self.image = x
        self.clipped = clipped
        self.rounded = rounded
        self.upper = (x >= 1.0 - RANGE_SLACK) if clipped else None
        self.lower = (x <= -1.0 + RANGE_SLACK) if clipped else None
        #: True when the fit is the plain D(z) - x (nothing clipped, nothing rounded): the original arithmetic is kept
        self.plain = not rounded and not (clipped and bool(self.upper.any() or self.lower.any()))

    def residual(self, decoded: torch.Tensor) -> torch.Tensor:
        """D(z) minus its nearest value the image allows (float32; differentiable in `decoded`)."""
        r = decoded.float() - self.image
        if self.plain:
            return r
        if self.rounded:
            r = r - r.clamp(-HALF_STEP, HALF_STEP)
        if self.clipped:
            r = torch.where(self.upper, r.clamp(max=0.0), r)
            r = torch.where(self.lower, r.clamp(min=0.0), r)
        return r

    def fitted(self, decoded: torch.Tensor) -> torch.Tensor:
        """x + r: the decoding with every pixel the image allows replaced by the image's value."""
        if self.plain:
            return decoded
        return (self.image + self.residual(decoded)).to(decoded.dtype)
