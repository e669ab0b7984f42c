"""ReNoise: K renoising iterations of the explicit step, the documented averaging, its step schedule and options;
and the reconstruction benchmark end to end on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from diffinv.bench.images import skimage_images, white_images
from diffinv.bench.methods import resolve_method
from diffinv.cli import app
from diffinv.inversion import METHODS, invert_sampler
from diffinv.inversion.naive import explicit_step
from diffinv.inversion.methods import EasyInv, ReNoise
from diffinv.models.denoiser import Denoiser
from diffinv.sampler.sampling import sample
from diffinv.sampler.schedule import make_schedule, reverse
from diffinv.utils.metrics import nmse
from diffinv.utils.specs import split_specs


def setting(pipe, name="ddim", steps=10, guidance=1.0):
    schedule = make_schedule(name, pipe.scheduler.config, steps)
    denoiser = Denoiser.from_pipeline(pipe, "a red circle", 1, guidance, schedule.prediction_type)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return denoiser, schedule, noise, sample(denoiser, schedule, noise).final


@pytest.mark.parametrize("name", ["ddim", "dpm++2m"])
def test_no_renoising_is_naive_exactly(pipe, name):
    denoiser, schedule, _, latent = setting(pipe, name)
    naive = invert_sampler(denoiser, schedule, latent, "naive")
    renoise = invert_sampler(denoiser, schedule, latent, "renoise", renoise_steps=0)
    assert torch.equal(renoise.noise, naive.noise) and renoise.nfe == naive.nfe == 10


def estimates(denoiser, x, step, count):
    """z^(1) = f(x), z^(k+1) = f(z^(k)), f the explicit step evaluated at its argument: by hand."""
    z, out = None, []
    for _ in range(count):
        z, _ = explicit_step(denoiser, x, step, [], evaluate_at=z)
        out.append(z)
    return out


@pytest.mark.parametrize(
    "average, expected",
    [(1, lambda e: e[3]), (2, lambda e: (e[2] + e[3]) / 2), ([0, 2], lambda e: (e[0] + e[1]) / 2), ([1, 4], lambda e: (e[1] + e[2] + e[3]) / 3),
     ([6, 9], lambda e: e[3])],  # a range past the estimates selects none: the last estimate
)
def test_averaging_as_documented(pipe, average, expected):
    denoiser, schedule, _, latent = setting(pipe)
    step = reverse(schedule)[5]
    assert step.timestep >= 250
    with torch.inference_mode():
        outcome = ReNoise(renoise_steps=3, average=average).build()(denoiser, latent, step, [], 5)
        hand = estimates(denoiser, latent, step, 4)
    assert torch.allclose(outcome.latent, expected(hand), atol=1e-6, rtol=0)
    assert outcome.residual == pytest.approx(float((hand[3] - hand[2]).norm() / hand[2].norm()), rel=1e-3)


def test_fewer_iterations_near_the_image(pipe):
    denoiser, schedule, _, latent = setting(pipe)  # leading spacing, 10 steps: timesteps 1, 101, 201 are below 250
    assert sum(step.timestep < 250 for step in schedule.steps) == 3
    assert invert_sampler(denoiser, schedule, latent, "renoise").nfe == 3 * 6 + 7 * 10
    assert invert_sampler(denoiser, schedule, latent, "renoise", early_timestep=0).nfe == 10 * 10
    denoiser, step = denoiser, reverse(schedule)[0]
    with torch.inference_mode():  # near t = 0: K = 5 and the mean of the first 5 of the 6 estimates
        outcome = ReNoise().build()(denoiser, latent, step, [], 0)
        hand = estimates(denoiser, latent, step, 6)
    assert torch.allclose(outcome.latent, torch.stack(hand[:5]).mean(0), atol=1e-6, rtol=0)


def test_renoise_inverts_ddim_closer_than_naive(pipe):
    denoiser, schedule, noise, latent = setting(pipe, steps=10)
    naive = invert_sampler(denoiser, schedule, latent, "naive")
    renoise = invert_sampler(denoiser, schedule, latent, "renoise", early_timestep=0, average=1)
    assert nmse(renoise.noise, noise) < nmse(naive.noise, noise) / 100
    assert len(renoise.residuals) == 10 and max(renoise.residuals) < 1e-3
    accelerated = invert_sampler(denoiser, schedule, latent, "renoise", anderson=2)
    assert torch.isfinite(accelerated.noise).all() and accelerated.nfe == renoise.nfe - 12


@pytest.mark.parametrize(
    "options, message",
    [
        ({"renoise_steps": -1}, "renoise_steps of inversion method 'renoise' must be >= 0"),
        ({"renoise_steps": 2.5}, "renoise_steps of inversion method 'renoise' must be a whole number"),
        ({"average": 0}, "at least 1"),
        ({"average": [3, 1]}, "0 <= start < stop"),
        ({"early_average": "last"}, "early_average of inversion method 'renoise' must be"),
        ({"anderson": -2}, "anderson of inversion method 'renoise' must be >= 0"),
        ({"K": 9}, "unknown option"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        METHODS.resolve("renoise", options)


def test_method_specs():
    assert split_specs("naive,easyinv:eta=0.8,order=code,renoise:average=[0,5]") == [
        "naive", "easyinv:eta=0.8,order=code", "renoise:average=[0,5]"]
    assert resolve_method("easyinv:eta=0.8,window=[0.85,0.95],order=code") == EasyInv(
        eta=0.8, window=(0.85, 0.95), order="code")
    with pytest.raises(ValueError, match="unknown option"):
        resolve_method("renoise:steps=3")
    with pytest.raises(ValueError, match="unknown inversion method"):
        resolve_method("magic")


def test_image_sets():
    photos, white = skimage_images(16), white_images(16)
    assert len(photos) == 10 and all(item.image.shape == (3, 16, 16) and item.group == "skimage" for item in photos)
    assert all(float((item.image > 0.9).float().mean()) > 0.45 for item in white)  # the horse silhouette: about half


def test_reconstruction_benchmark_writes_rows(model_dir, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (40, 30), (200, 40, 40)).save(folder / "red.png")
    Image.new("L", (16, 16), 250).save(folder / "white.png")
    out = tmp_path / "rows.json"
    result = CliRunner().invoke(app, [
        "bench", "reconstruction", "--model", str(model_dir), "--images", str(folder), "--generated", "1",
        "--methods", "naive,easyinv:eta=0.8,renoise:renoise_steps=1", "--steps", "4", "--dtype", "float32,float16",
        "--json", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "lpips: " in result.output and "easyinv:eta=0.8" in result.output
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 3 * 4 * 2  # 3 images x (autoencoder + 3 methods) x 2 dtypes
    for row in rows:
        for key in ("method", "sampler", "steps", "guidance", "dtype", "image", "psnr", "ssim", "lpips", "nfe",
                    "peak_memory_bytes"):
            assert key in row, key
        assert row["error"] is None and row["psnr"] > 0
    by = {(r["method"], r["image"], r["dtype"]): r for r in rows}
    assert by[("naive", "red", "float32")]["nfe"] == by[("easyinv:eta=0.8", "red", "float32")]["nfe"] == 4
    assert by[("renoise:renoise_steps=1", "red", "float16")]["nfe"] == 8
    assert {r["image"] for r in rows} == {"red", "white", "generated-0"}


def test_reconstruction_benchmark_refuses_bad_input(model_dir, tmp_path):
    result = CliRunner().invoke(app, ["bench", "reconstruction", "--model", str(model_dir), "--images", "white",
                                      "--methods", "naive,renoise:K=3", "--json", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and "unknown option" in result.output
    assert not (tmp_path / "x.json").exists()


def test_noise_regularization_is_optional_and_costs_one_call_per_step(pipe):
    denoiser, schedule, noise, latent = setting(pipe, steps=6)
    plain = invert_sampler(denoiser, schedule, latent, "renoise", renoise_steps=2)
    regularized = invert_sampler(denoiser, schedule, latent, "renoise", renoise_steps=2, noise_regularization=True)
    again = invert_sampler(denoiser, schedule, latent, "renoise", renoise_steps=2, noise_regularization=True)
    assert regularized.nfe == plain.nfe + 6
    assert torch.isfinite(regularized.noise).all() and not torch.allclose(regularized.noise, plain.noise)
    assert torch.equal(regularized.noise, again.noise)  # seeded: the same run twice gives the same noise
    with pytest.raises(ValueError, match="true or false"):
        METHODS.resolve("renoise", {"noise_regularization": "yes"})
