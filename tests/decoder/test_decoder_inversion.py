"""Decoder inversion (issue 5): gradient-free methods, gradient baseline, cocoercivity check, benchmark.

A random-weight VAE is no autoencoder at all (E(D(z)) has nothing to do with z, and T = E o D - E(x)
is not cocoercive), so the module fixture first trains the tiny test VAE for ~120 Adam steps (a few
seconds, one thread) on smooth random images. The images to invert are D(z*) for latents z* of
held-out smooth images, so the true latent is known.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from diffinv.bench.decoder import parse_variant, run_decoder_benchmark
from diffinv.decoder import (
    DECODER_METHODS,
    DecoderInversionDiverged,
    cosine_warmup_lr,
    invert_decoder,
)
from diffinv.decoder.cocoercivity import check_cocoercivity, inertial_km_lambda_max, max_step_size
from diffinv.models.autoencoder import Autoencoder
from diffinv.models.testing import tiny_pipeline
from diffinv.utils.metrics import nmse

ITERATIVE = ("forward-step", "inertial-km", "gradient-free", "gradient")


def invert_float(autoencoder: Autoencoder, images: torch.Tensor, method: str = "encoder", **options):
    """invert_decoder on float decodings D(z) that were never clipped (the fixture's images reach past [-1, 1])."""
    return invert_decoder(autoencoder, images, method, **{"clipped": False, **options})


def rms_residual(autoencoder: Autoencoder, latent: torch.Tensor, images: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((autoencoder.decode(latent).float() - images).pow(2).mean().sqrt())


def _smooth_images(count: int, generator: torch.Generator, size: int = 16) -> torch.Tensor:
    base = torch.randn(count, 3, 4, 4, generator=generator)
    return torch.tanh(F.interpolate(base, size=size, mode="bicubic", align_corners=False))


@pytest.fixture(scope="module")
def trained() -> Autoencoder:
    """The tiny pipeline's VAE after a few seconds of autoencoder training (one thread, set by conftest)."""
    vae = tiny_pipeline(seed=0).vae
    autoencoder = Autoencoder(vae)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(vae.parameters(), lr=5e-3)
    for _ in range(120):
        x = _smooth_images(8, generator)
        loss = F.mse_loss(autoencoder.decode(autoencoder.encode(x)), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    vae.eval().requires_grad_(False)
    return autoencoder


@pytest.fixture(scope="module")
def problem(trained: Autoencoder) -> tuple[torch.Tensor, torch.Tensor]:
    """(true latents z*, images D(z*)) for 4 held-out frames."""
    with torch.inference_mode():
        latents = trained.encode(_smooth_images(4, torch.Generator().manual_seed(1)))
        images = trained.decode(latents)
    return latents, images


def test_unknown_method_and_option_are_rejected(trained, problem):
    _, images = problem
    with pytest.raises(ValueError, match="unknown decoder method"):
        invert_float(trained, images, "newton")
    with pytest.raises(ValueError, match="unknown option"):
        invert_float(trained, images, "forward-step", step=0.1)
    with pytest.raises(ValueError):
        invert_float(trained, images[:, :2], "encoder")
    assert set(ITERATIVE) | {"encoder"} == set(DECODER_METHODS)


def test_encoder_baseline(trained, problem):
    latents, images = problem
    result = invert_float(trained, images)
    with torch.inference_mode():
        assert torch.equal(result.latent, trained.encode(images))
    assert result.iterations == 0 and result.converged and result.residuals == [] == result.latent_residuals
    assert rms_residual(trained, result.latent, images) > 0.01  # the encoder is not an exact inverse of this decoder


@pytest.mark.parametrize("method", ITERATIVE)
def test_each_method_lowers_the_decoder_residual(trained, problem, method):
    latents, images = problem
    start = invert_float(trained, images, "encoder")
    result = invert_float(trained, images, method, iterations=30)
    assert result.converged and not result.diverged and result.reason is None
    assert result.iterations == 30 and len(result.residuals) == 31
    # residuals[0] is measured at the starting point E(x): the same as the encoder's
    assert result.residuals[0] == pytest.approx(rms_residual(trained, start.latent, images), rel=1e-4)
    assert result.residuals[-1] < 0.35 * result.residuals[0]
    assert result.latent.shape == latents.shape and result.latent.dtype == trained.dtype
    assert result.seconds > 0 and result.peak_memory_bytes >= 0
    if method in ("forward-step", "inertial-km"):
        # the fixed-point methods also recover the latent itself far better than the encoder
        assert nmse(result.latent, latents) < 0.2 * nmse(start.latent, latents)
        assert result.condition is not None and result.condition.holds is True
        assert result.cocoercivity_min is not None and result.cocoercivity_min > 0
    if method != "gradient":
        assert result.latent_residuals[-1] < 0.35 * result.latent_residuals[0]


def test_float16_runs_without_nan(trained, problem):
    latents, images = problem
    half = Autoencoder(copy.deepcopy(trained.vae).half())
    for method in DECODER_METHODS:
        result = invert_float(half, images, method, **({} if method == "encoder" else {"iterations": 20}))
        assert result.latent.dtype == torch.float16
        assert torch.isfinite(result.latent).all(), method
        assert all(math.isfinite(r) for r in result.residuals), method
        assert result.converged, method
        assert result.dtype == ("float32" if method == "gradient" else "float16")
        if method != "encoder":
            assert result.residuals[-1] < 0.5 * result.residuals[0], method


def test_gradient_free_float16_uses_the_larger_eps(trained, problem):
    _, images = problem
    half = Autoencoder(copy.deepcopy(trained.vae).half())
    assert invert_float(half, images[:1], "gradient-free", iterations=1).options["eps"] == 1e-4
    assert invert_float(trained, images[:1], "gradient-free", iterations=1).options["eps"] == 1e-8


@pytest.mark.parametrize(
    "method, options",
    [("forward-step", {"rho": 1e3}), ("inertial-km", {"beta": 1e3}), ("gradient-free", {"lr": 1e3}), ("gradient", {"lr": 1e3})],
)
def test_bad_step_sizes_are_reported_as_divergence(trained, problem, method, options):
    _, images = problem
    with pytest.raises(DecoderInversionDiverged, match="diverged") as caught:
        invert_float(trained, images, method, iterations=20, **options)
    flagged = caught.value.result
    assert not flagged.converged and flagged.diverged and flagged.reason
    with pytest.warns(RuntimeWarning, match="diverged"):
        result = invert_float(trained, images, method, iterations=20, on_divergence="report", **options)
    assert not result.converged and result.diverged and result.iterations < 20


@pytest.mark.filterwarnings("ignore:forward-step. convergence is not guaranteed")
@pytest.mark.parametrize("rho", [3.0, 5.0])
def test_too_large_step_without_blow_up_is_not_converged(trained, problem, rho):
    # rho beyond 2 beta: the residual stays bounded (the decoder saturates) while the iterates wander off
    latents, images = problem
    with pytest.warns(RuntimeWarning, match="diverged"):
        result = invert_float(trained, images, "forward-step", rho=rho, iterations=100, on_divergence="report")
    assert result.diverged and not result.converged and result.reason
    assert nmse(result.latent, latents) > 0.5  # it really is a bad latent
    assert result.condition is not None and result.condition.holds is False


@pytest.mark.parametrize("method", ["forward-step", "inertial-km", "gradient-free", "gradient"])
def test_chunked_equals_unchunked(trained, problem, method):
    _, images = problem
    whole = invert_float(trained, images, method, iterations=15)
    chunked = invert_float(trained, images, method, iterations=15, chunk_size=3)
    torch.testing.assert_close(chunked.latent, whole.latent, atol=1e-4, rtol=1e-4)
    assert chunked.residuals == pytest.approx(whole.residuals, rel=1e-3)
    assert chunked.iterations == whole.iterations


def test_gradient_works_inside_inference_mode(trained, problem):
    _, images = problem
    with torch.inference_mode():
        result = invert_float(trained, images, "gradient", iterations=5)
    assert result.residuals[-1] < result.residuals[0]


def test_tol_stops_early(trained, problem):
    _, images = problem
    result = invert_float(trained, images, "forward-step", iterations=200, tol=1e-3)
    assert result.converged and result.iterations < 200
    assert result.latent_residuals[-1] <= 1e-3


def test_inertial_km_condition_is_checked(trained, problem):
    _, images = problem
    alpha = 0.3
    with pytest.warns(RuntimeWarning, match="lambda_max"):
        result = invert_float(trained, images, "inertial-km", alpha=alpha, lam=0.6, beta=0.2, iterations=10)
    assert result.condition.holds is False and result.condition.lambda_max == pytest.approx(inertial_km_lambda_max(alpha))
    result = invert_float(trained, images, "inertial-km", alpha=alpha, lam=0.45, beta=0.2, iterations=10)
    assert result.condition.holds is True and result.condition.step_size == pytest.approx(0.18)


def test_lambda_max_matches_the_theorem_bound():
    assert inertial_km_lambda_max(0.0) == 1.0
    values = [inertial_km_lambda_max(a) for a in (0.0, 0.1, 0.3, 0.5, 0.9)]
    assert all(a > b > 0 for a, b in zip(values, values[1:]))
    for alpha in (0.1, 0.3, 0.6):
        # brute force over delta (sigma -> 0) of the Bot-Csetnek-Hendrich bound
        low = alpha**2 * (1 + alpha) / (1 - alpha**2)
        deltas = torch.logspace(math.log10(low) + 1e-9, 3, 200001, dtype=torch.float64)
        bound = (deltas - alpha * (alpha * (1 + alpha) + alpha * deltas)) / (deltas * (1 + alpha * (1 + alpha) + alpha * deltas))
        assert inertial_km_lambda_max(alpha) == pytest.approx(float(bound.max()), rel=1e-6)
    assert max_step_size(0.5) == 1.0 and max_step_size(-1.0) == 0.0
    with pytest.raises(ValueError):
        inertial_km_lambda_max(1.0)


def test_cocoercivity_check_is_sane(trained, problem):
    latents, images = problem
    check = check_cocoercivity(trained, latents, step_size=0.5, iterations=10)
    assert check.reference == "ground-truth" and len(check.ratios) == 10 and len(check.ratios[0]) == 4
    assert 0 < check.beta_min <= check.beta_median < 100
    assert len(check.beta_min_per_frame) == 4 and min(check.beta_min_per_frame) == pytest.approx(check.beta_min)
    assert check.max_step_size == pytest.approx(2 * check.beta_min)
    assert check.holds and "holds" in check.summary()
    too_big = check_cocoercivity(trained, latents, step_size=4 * check.beta_min + 1, iterations=3)
    assert not too_big.holds
    consecutive = check_cocoercivity(trained, None, step_size=0.5, images=images, iterations=6, chunk_size=3)
    assert consecutive.reference == "consecutive" and consecutive.beta_min > 0
    inertial = check_cocoercivity(trained, latents, step_size=0.5, alpha=0.3, iterations=6)
    assert inertial.max_step_size == pytest.approx(2 * inertial_km_lambda_max(0.3) * inertial.beta_min)
    # an untrained VAE is not cocoercive: the check must say so
    random_vae = Autoencoder(tiny_pipeline(seed=0).vae)
    assert not check_cocoercivity(random_vae, latents, step_size=0.5, iterations=5).holds


def test_cosine_schedule():
    # gradient-free: horizon min(iterations, 100), 10% warm-up, frozen from 80% on
    assert cosine_warmup_lr(0, 0.01, 100, True) == pytest.approx(0.001)
    assert cosine_warmup_lr(9, 0.01, 100, True) == pytest.approx(0.01)
    assert cosine_warmup_lr(10, 0.01, 100, True) == pytest.approx(0.01)
    frozen = cosine_warmup_lr(79, 0.01, 100, True)
    assert 0 < frozen < 0.01
    assert cosine_warmup_lr(80, 0.01, 100, True) == frozen == cosine_warmup_lr(199, 0.01, 100, True)
    # gradient baseline: plain cosine with warm-up, decaying towards 0
    assert cosine_warmup_lr(99, 0.1, 100, False) < 1e-3


def test_parse_variant():
    assert parse_variant("gradient:lr=0.01,schedule=false") == ("gradient", {"lr": 0.01, "schedule": False})
    assert parse_variant("forward-step") == ("forward-step", {})
    with pytest.raises(ValueError):
        parse_variant("sgd")
    with pytest.raises(ValueError, match="not per variant"):  # the benchmark's --iterations would override it silently
        parse_variant("gradient:iterations=5")


def test_benchmark_writes_json_and_plot(trained, problem, tmp_path, capsys):
    latents, _ = problem
    out_json, out_plot = tmp_path / "bench.json", tmp_path / "pareto.png"
    rows = run_decoder_benchmark(
        trained,
        frames=[1, 2],
        iterations=[4],
        methods=["encoder", "gradient-free", "gradient:lr=0.01,schedule=false", "forward-step:rho=1000"],
        out_json=out_json,
        out_plot=out_plot,
        latents=latents,
        progress=False,
    )
    data = json.loads(out_json.read_text())
    assert data["rows"] == rows
    assert len(rows) == 2 * (1 + 3)
    for row in rows:
        for key in ("method", "decoder", "dtype", "frames", "iterations", "latent_nmse", "latent_nmse_db", "psnr", "seconds", "peak_memory_bytes"):
            assert key in row
        assert row["latent_nmse"] >= 0 or not row["converged"]
    assert {r["method"] for r in rows if not r["converged"]} == {"forward-step:rho=1000"}
    encoder = next(r for r in rows if r["decoder"] == "encoder" and r["frames"] == 2)
    assert encoder["latent_nmse"] == pytest.approx(nmse(trained.encode(trained.decode(latents[:2])), latents[:2]), rel=1e-5)
    assert out_plot.stat().st_size > 0
    printed = capsys.readouterr().out
    assert "frames=1" in printed and "frames=2" in printed and "DIVERGED" in printed


def test_panning_frames_move_across_one_photo():
    from diffinv.bench.images import panning_frames

    frames = panning_frames(32, 3)
    assert frames.shape == (3, 3, 32, 32) and frames.min() >= -1 and frames.max() <= 1
    assert not torch.equal(frames[0], frames[1])
    # the window moves by 8 px diagonally per frame: frame 1's top-left is frame 0's shifted
    assert torch.equal(frames[0][:, 8:, 8:], frames[1][:, :-8, :-8])
    with pytest.raises(ValueError):
        panning_frames(4, 2)


def test_benchmark_on_video_frames_knows_the_true_latents(trained):
    rows = run_decoder_benchmark(trained, frames=[2], iterations=[3], methods=["encoder", "forward-step"],
                                 video_size=32, progress=False, print_tables=False)
    assert {r["image"] for r in rows} == {"E(panning 32px frames)"}
    assert all(r["latent_nmse"] is not None and r["latent_nmse"] < 1 for r in rows)
    with pytest.raises(ValueError, match="multiple"):
        run_decoder_benchmark(trained, frames=[1], iterations=[1], methods=["encoder"], video_size=33, progress=False)


def test_benchmark_refuses_two_sources_of_frames(trained, problem):
    latents, _ = problem
    with pytest.raises(ValueError, match="one source"):
        run_decoder_benchmark(trained, frames=[1], iterations=[1], methods=["encoder"], latents=latents, video_size=32, progress=False)


def test_benchmark_saved_setting_fits_clipped_images(trained, problem, capsys):
    from diffinv.bench.decoder import saved_image
    from diffinv.decoder.target import on_8bit_grid

    latents, images = problem
    rows = run_decoder_benchmark(trained, frames=[2], iterations=[3], methods=["encoder", "forward-step", "forward-step:clipped=false"],
                                 latents=latents, settings=["float", "saved"], progress=False)
    assert [(r["setting"], r["method"], r["clipped"]) for r in rows] == [
        ("float", "encoder", False), ("float", "forward-step", False), ("float", "forward-step:clipped=false", False),
        ("saved", "encoder", True), ("saved", "forward-step", True), ("saved", "forward-step:clipped=false", False)]
    saved = saved_image(images[:2])
    assert saved.min() >= -1 and saved.max() <= 1
    assert on_8bit_grid(saved) and not on_8bit_grid(images[:2].clamp(-1, 1))
    each = [float((frame.abs() >= 1).float().mean()) for frame in saved]
    assert rows[3]["clipped_fraction_each"] == pytest.approx(each) and max(each) > 0
    assert len(rows[0]["latent_nmse_db_each"]) == 2
    printed = capsys.readouterr().out
    assert "saved images" in printed and "clipped share per image" in printed
    with pytest.raises(ValueError, match="unknown image setting"):
        run_decoder_benchmark(trained, frames=[1], iterations=[1], methods=["encoder"], latents=latents, settings=["png"], progress=False)
