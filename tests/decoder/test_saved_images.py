"""Decoder inversion of images as files hold them (issue 34), and what the stage's `seconds` covers (issue 33, item 7).

A synthetic linear autoencoder makes the clipped case exact: D(z) = A z reaches well past [-1, 1],
E = A's pseudo-inverse (so E(D(z)) = z), and the image is clip(D(z*)). Fitting D(z) to it as it is
cannot recover z*; fitting clip(D(z)) can.
"""

from __future__ import annotations

import time

import pytest
import torch

from diffinv.decoder import invert_decoder
from diffinv.decoder.target import HALF_STEP, ImageTarget, clipped_fraction, on_8bit_grid
from diffinv.models.autoencoder import Autoencoder
from diffinv.models.testing import tiny_pipeline
from diffinv.utils.metrics import nmse

LATENT = (2, 2, 2)  # [C, h, w]
IMAGE = (3, 4, 4)


class LinearAutoencoder:
    """D(z) = A z + b, E(x) = A^+ (x - b): an exact right inverse, cocoercive T with beta = 1."""

    def __init__(self, seed: int = 0, gain: float = 1.2):
        generator = torch.Generator().manual_seed(seed)
        n_latent, n_image = 8, 48
        self.matrix = gain * torch.randn(n_image, n_latent, generator=generator) / n_latent**0.5
        self.bias = 0.3 * torch.randn(n_image, generator=generator)
        self.pinv = torch.linalg.pinv(self.matrix)
        self.dtype, self.device = torch.float32, torch.device("cpu")
        self.decodes = 0

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        self.decodes += 1
        flat = latent.to(self.dtype).flatten(1) @ self.matrix.T + self.bias
        return flat.view(-1, *IMAGE)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        flat = (image.to(self.dtype).flatten(1) - self.bias) @ self.pinv.T
        return flat.view(-1, *LATENT)


@pytest.fixture(scope="module")
def clipped_problem():
    """(autoencoder, true latents, the clipped images clip(D(z*))) with a good share of clipped values."""
    autoencoder = LinearAutoencoder()
    latents = torch.randn(3, *LATENT, generator=torch.Generator().manual_seed(1))
    images = autoencoder.decode(latents).clamp(-1, 1)
    return autoencoder, latents, images


def test_the_synthetic_images_are_clipped(clipped_problem):
    autoencoder, latents, images = clipped_problem
    share = clipped_fraction(images)
    assert 0.15 < share < 0.6
    assert share == pytest.approx(float((autoencoder.decode(latents).abs() >= 1).float().mean()))


@pytest.mark.parametrize(
    "method, options",
    [("forward-step", {"rho": 0.9, "iterations": 300}), ("inertial-km", {"iterations": 300}),
     ("gradient", {"lr": 0.05, "iterations": 600})],
)
def test_only_the_clip_aware_fit_recovers_the_true_latent(clipped_problem, method, options):
    autoencoder, latents, images = clipped_problem
    aware = invert_decoder(autoencoder, images, method, **options)
    plain = invert_decoder(autoencoder, images, method, clipped=False, **options)
    encoder = invert_decoder(autoencoder, images)
    assert aware.converged and aware.options["clipped"] is True and plain.options["clipped"] is False
    assert nmse(aware.latent, latents) < 1e-6
    assert nmse(plain.latent, latents) > 1e-3  # the plain fit lands on the least-squares latent of the clipped image
    assert nmse(encoder.latent, latents) > 1e-3
    assert aware.residuals[-1] < 1e-4  # the fit residual (zero where the decoding overshoots a clipped pixel)


def test_gradient_free_adam_gets_closer_with_the_clip_aware_fit(clipped_problem):
    autoencoder, latents, images = clipped_problem
    aware = invert_decoder(autoencoder, images, "gradient-free", lr=0.05, iterations=300)
    plain = invert_decoder(autoencoder, images, "gradient-free", lr=0.05, iterations=300, clipped=False)
    assert nmse(aware.latent, latents) < 0.01 * nmse(plain.latent, latents)


def test_clip_aware_fit_leaves_only_overshooting_bound_pixels_free():
    image = torch.tensor([1.0, 1.0, -1.0, -1.0, 0.5, 0.5]).view(1, 1, 1, 6)
    decoded = torch.tensor([1.3, 0.8, -1.2, -0.9, 0.7, 0.3]).view(1, 1, 1, 6)
    residual = ImageTarget(image, clipped=True, rounded=False).residual(decoded).flatten()
    torch.testing.assert_close(residual, torch.tensor([0.0, -0.2, 0.0, 0.1, 0.2, -0.2]))
    plain = ImageTarget(image, clipped=False, rounded=False)
    assert plain.plain and torch.equal(plain.residual(decoded), decoded - image)


def test_rounded_fit_is_an_interval_of_half_a_step():
    image = (torch.tensor([0, 10, 128, 255], dtype=torch.float32) / 127.5 - 1).view(1, 1, 1, 4)
    assert on_8bit_grid(image) and not on_8bit_grid(image + 0.3 * HALF_STEP)
    inside = image + torch.tensor([0.9, -0.9, 0.5, -0.99]).view(1, 1, 1, 4) * HALF_STEP
    outside = image + torch.tensor([-3.0, -1.5, 2.0, 3.0]).view(1, 1, 1, 4) * HALF_STEP
    target = ImageTarget(image, clipped=True, rounded=True)
    assert torch.equal(target.residual(inside), torch.zeros_like(image))
    # past the interval, the distance to its edge; past a bound the pixel sits at (-1 or 1) it is free
    torch.testing.assert_close(target.residual(outside).flatten(), torch.tensor([0.0, -0.5, 1.0, 0.0]) * HALF_STEP)


def test_bad_images_for_the_fit_are_refused_in_one_line(clipped_problem):
    autoencoder, latents, _ = clipped_problem
    raw = autoencoder.decode(latents)  # never clipped: values past [-1, 1]
    with pytest.raises(ValueError, match=r"outside \[-1, 1\].*clipped=False") as caught:
        invert_decoder(autoencoder, raw)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="8-bit grid.*rounded=False"):
        invert_decoder(autoencoder, raw.clamp(-1, 1), rounded=True)
    with pytest.raises(ValueError, match="option clipped"):
        invert_decoder(autoencoder, raw.clamp(-1, 1), clipped="maybe")


def test_option_off_reproduces_the_plain_forward_step_exactly(clipped_problem):
    # the arithmetic before issue 34: z <- z - rho (E(D(z)) - E(x)) from E(x), D(z) - x as the residual
    autoencoder, _, images = clipped_problem
    rho, iterations = 0.5, 7
    encoded = autoencoder.encode(images)
    z, residuals = encoded.float(), []
    for _ in range(iterations):
        decoded = autoencoder.decode(z)
        residuals.append(float((decoded.float() - images).double().pow(2).sum().div(images.numel()).sqrt()))
        z = z - rho * (autoencoder.encode(decoded) - encoded).float()
    result = invert_decoder(autoencoder, images, "forward-step", rho=rho, iterations=iterations, clipped=False)
    assert torch.equal(result.latent, z)
    assert result.residuals[:-1] == residuals


def test_an_unclipped_image_fits_the_same_with_the_option_on(clipped_problem):
    # nothing at a bound: the clip-aware fit is the plain one, to the last bit
    autoencoder, latents, _ = clipped_problem
    images = autoencoder.decode(0.2 * latents) * 0.6
    assert float(images.abs().max()) < 1 and clipped_fraction(images) == 0
    on = invert_decoder(autoencoder, images, "forward-step", iterations=5)
    off = invert_decoder(autoencoder, images, "forward-step", iterations=5, clipped=False)
    assert torch.equal(on.latent, off.latent) and on.residuals == off.residuals and on.clipped_fraction == 0.0


def test_the_result_reports_the_clipped_share(clipped_problem):
    autoencoder, _, images = clipped_problem
    result = invert_decoder(autoencoder, images)
    assert result.clipped_fraction == pytest.approx(clipped_fraction(images)) and result.clipped_fraction > 0
    half = torch.zeros(1, 3, 2, 2)
    half[0, 0] = 1.0
    half[0, 1, 0] = -1.0
    assert clipped_fraction(half) == pytest.approx(6 / 12)


def counting_autoencoder() -> tuple[Autoencoder, dict[str, int]]:
    """The tiny test autoencoder, its decoder calls counted in the returned dict."""
    autoencoder = Autoencoder(tiny_pipeline(seed=0).vae)
    calls = {"decode": 0}
    original = autoencoder.decode

    def counting_decode(latent):
        calls["decode"] += 1
        return original(latent)

    autoencoder.decode = counting_decode
    return autoencoder, calls


def test_encoder_stage_never_decodes_and_its_seconds_cover_the_call():
    autoencoder, calls = counting_autoencoder()
    # large enough that the stage's work dwarfs the garbage collection `measure` runs before it (not stage work)
    images = torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    invert_decoder(autoencoder, images[:1])  # warm-up
    started = time.perf_counter()
    result = invert_decoder(autoencoder, images)
    wall = time.perf_counter() - started
    assert calls["decode"] == 0
    assert result.residuals == [] and result.latent_residuals == []
    assert wall * 0.9 <= result.seconds <= wall


def test_iterative_stage_seconds_include_the_final_residual():
    autoencoder, calls = counting_autoencoder()
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    started = time.perf_counter()
    result = invert_decoder(autoencoder, images, "forward-step", iterations=3, on_divergence="report")
    wall = time.perf_counter() - started
    assert calls["decode"] == 3 + 1  # one per iteration and one for the residual at the returned latent
    assert len(result.residuals) == 4
    assert wall * 0.9 <= result.seconds <= wall
