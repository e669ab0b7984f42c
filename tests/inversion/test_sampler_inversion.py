"""Every sampler with its own stepper inverts through the shared methods: exact inversion (each step's implicit
equation with all its network calls) recovers the noise far better than naive inversion (the step run
backwards), a loosely solved step does not, and a model folder's own sampler is used by default."""

from __future__ import annotations

import json

import pytest
import torch

from diffinv.inversion import invert_sampler
from diffinv.models.denoiser import Denoiser
from diffinv.models.testing import tiny_sd3_pipeline
from diffinv.sampler.sampling import sample
from diffinv.sampler.schedule import make_schedule
from diffinv.utils.metrics import nmse

EXACT = {"anderson": 3, "tol": 1e-6, "max_iter": 300, "sweeps": 3}
LOOSE = {"tol": 1e-1, "max_iter": 1}  # one forward step per equation: the bound must fail without a solved step


def round_trip(pipe, name, steps, guidance, seed=0):
    schedule = make_schedule(name, pipe.scheduler.config, steps)
    denoiser = Denoiser.from_pipeline(pipe, "a red circle", 1, guidance, schedule.prediction_type)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    return noise, sample(denoiser, schedule, noise).final, denoiser, schedule


@pytest.fixture(scope="module")
def sd3():
    return tiny_sd3_pipeline()


@pytest.mark.parametrize("guidance", [1.0, 7.0])
@pytest.mark.parametrize("name", ["pndm", "unipc", "unipc3", "heun", "deis", "deis3", "flow-heun"])
def test_exact_inversion_beats_naive(pipe, sd3, name, guidance):
    model = sd3 if name == "flow-heun" else pipe
    noise, latent, denoiser, schedule = round_trip(model, name, 10, guidance)
    naive = invert_sampler(denoiser, schedule, latent, "naive")
    exact = invert_sampler(denoiser, schedule, latent, "exact-paper", **EXACT)
    loose = invert_sampler(denoiser, schedule, latent, "exact-paper", **LOOSE)
    ratio = 100 if guidance == 1.0 else 10
    calls = {"pndm": 11, "heun": 19, "flow-heun": 19}.get(name, 10)
    assert naive.nfe == calls and naive.sampler == name
    assert exact.converged and max(exact.residuals) <= 1e-6 and len(exact.residuals) == 10
    assert nmse(exact.noise, noise) * ratio < nmse(naive.noise, noise)
    assert nmse(loose.noise, noise) * ratio > nmse(naive.noise, noise)
    fixed = invert_sampler(denoiser, schedule, latent, "fixed-point", tol=1e-6, max_iter=300)
    assert nmse(fixed.noise, noise) < nmse(naive.noise, noise)


@pytest.mark.parametrize("name", ["pndm", "unipc", "heun", "deis"])
def test_easyinv_and_renoise_run_on_every_sampler(pipe, name):
    noise, latent, denoiser, schedule = round_trip(pipe, name, 6, 3.0)
    naive = invert_sampler(denoiser, schedule, latent, "naive")
    for method, options in (("easyinv", {}), ("easyinv", {"order": "code"}), ("renoise", {"renoise_steps": 2})):
        result = invert_sampler(denoiser, schedule, latent, method, **options)
        assert torch.isfinite(result.noise).all() and nmse(result.noise, noise) < 1.0
    renoised = invert_sampler(denoiser, schedule, latent, "renoise", renoise_steps=0)
    assert torch.equal(renoised.noise, naive.noise)  # K = 0 is naive inversion, on any sampler
    with pytest.raises(ValueError, match="single-call sampler"):
        invert_sampler(denoiser, schedule, latent, "renoise", noise_regularization=True)


def test_heun_naive_inversion_is_heun_run_backwards(pipe):
    """One Heun step inverted naively: the network at the known latent, then at the Euler point towards noise."""
    noise, latent, denoiser, schedule = round_trip(pipe, "heun", 3, 1.0)
    result = invert_sampler(denoiser, schedule, latent, "naive", keep_trajectory=True)
    step = schedule.steps[1]  # a two-call step: from its end back to its start
    y = result.trajectory[1]
    with torch.inference_mode():
        first = denoiser.predict(y, step.extra[0], step.end).noise
        s_end, s_start = step.end.sigma / step.end.alpha, step.start.sigma / step.start.alpha
        euler = (y / step.end.alpha + (s_start - s_end) * first) * step.start.alpha
        second = denoiser.predict(euler, step.timestep, step.start).noise
        expected = (y / step.end.alpha + (s_start - s_end) * (first + second) / 2) * step.start.alpha
    assert torch.allclose(result.trajectory[2], expected, atol=1e-5)


def test_a_folder_naming_pndm_is_inverted_with_pndm(tmp_path):
    from diffusers import EulerAncestralDiscreteScheduler, PNDMScheduler
    from typer.testing import CliRunner

    from diffinv.cli import app
    from diffinv.models.testing import tiny_pipeline

    pipe = tiny_pipeline()
    pipe.scheduler = PNDMScheduler.from_config(pipe.scheduler.config, skip_prk_steps=True)
    pipe.save_pretrained(tmp_path / "sd")
    runner = CliRunner()
    common = ["--model", str(tmp_path / "sd"), "--prompt", "a red circle", "--steps", "6", "--guidance", "1"]
    made = runner.invoke(app, ["generate", *common, "--seed", "3", "--out", str(tmp_path / "gen")])
    assert made.exit_code == 0, made.output
    result = runner.invoke(app, ["invert", "--latent", str(tmp_path / "gen" / "latent.safetensors"), *common,
                                 "--method", "exact", "--method-option", "anderson=3", "--method-option", "tol=1e-6",
                                 "--method-option", "sweeps=3", "--reference", str(tmp_path / "gen"), "--out", str(tmp_path / "inv")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "inv" / "report.json").read_text())
    assert report["sampler"] == "pndm" and report["nfe"] > 7 and report["noise_nmse"] < 1e-5
    assert "sampler pndm: the model folder's own (PNDMScheduler)" in report["notes"]
    # a folder whose sampler is stochastic: the default sampler, with a note saying why
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(tmp_path / "ancestral")
    schedule = make_schedule(None, EulerAncestralDiscreteScheduler.from_pretrained(tmp_path / "ancestral", subfolder="scheduler").config, 6)
    assert schedule.name == "ddim" and "EulerAncestralDiscreteScheduler" in schedule.note and "stochastic" in schedule.note
    refused = runner.invoke(app, ["invert", "--latent", str(tmp_path / "gen" / "latent.safetensors"), *common,
                                  "--sampler", "euler-ancestral", "--out", str(tmp_path / "bad")])
    assert refused.exit_code == 2 and "cannot be inverted without the noise it drew" in refused.output
    assert refused.output.strip().count("\n") == 0
