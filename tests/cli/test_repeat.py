"""A run can be repeated from its report: every stage's whole configuration is in report.json, and reading it back
gives the same noise bit for bit (the library, and `diffinv invert --like`)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import diffinv
from diffinv.cli import app
from diffinv.decoder import DECODERS, invert_decoder
from diffinv.inversion import METHODS, invert_sampler
from diffinv.models.autoencoder import Autoencoder
from diffinv.models.denoiser import Denoiser
from diffinv.sampler.schedule import make_schedule

#: A configuration of each method that differs from its defaults where the method has options.
SAMPLER_CONFIGS = ["naive", "exact:tol=1e-5,anderson=2,stall=20", "exact-paper:max_iter=30", "fixed-point:anderson=2,tol=1e-5",
                   "easyinv:eta=0.7,window=[0.1,0.5],order=code", "renoise:renoise_steps=2,average=[0,2]"]
DECODER_CONFIGS = ["encoder", "forward-step:iterations=3,rho=0.4", "inertial-km:iterations=3,alpha=0.1",
                   "gradient-free:iterations=3,lr=0.02", "gradient:iterations=3,schedule=false"]


@pytest.fixture(scope="module")
def made(pipe):
    schedule = make_schedule("dpm++2m", pipe.scheduler.config, 5)
    denoiser = Denoiser.from_pipeline(pipe, "a red circle", 1, 3.0, schedule.prediction_type)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return denoiser, schedule, diffinv.sample(denoiser, schedule, noise).final


@pytest.mark.parametrize("label", SAMPLER_CONFIGS)
def test_every_sampler_method_reruns_from_its_report(made, label):
    denoiser, schedule, latent = made
    first = invert_sampler(denoiser, schedule, latent, label)
    written = json.loads(json.dumps(first.report))["method_config"]
    again = invert_sampler(denoiser, schedule, latent, METHODS.from_dict(written))
    assert METHODS.from_dict(written) == METHODS.resolve(label)
    assert torch.equal(first.noise, again.noise)


@pytest.mark.parametrize("label", DECODER_CONFIGS)
def test_every_decoder_method_reruns_from_its_report(pipe, label):
    autoencoder = Autoencoder.from_pipeline(pipe)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    first = invert_decoder(autoencoder, images, label, on_divergence="report")
    written = json.loads(json.dumps(first.method_config))
    assert DECODERS.from_dict(written) == DECODERS.resolve(label)
    again = invert_decoder(autoencoder, images, DECODERS.from_dict(written), on_divergence="report")
    assert torch.equal(first.latent, again.latent)


def test_invert_like_a_report_gives_the_same_noise(model_dir, tmp_path):
    runner = CliRunner()
    generated = tmp_path / "gen"
    assert runner.invoke(app, ["generate", "--model", str(model_dir), "--prompt", "a red circle", "--steps", "4",
                               "--guidance", "3", "--sampler", "dpm++2m", "--out", str(generated)]).exit_code == 0
    first = runner.invoke(app, ["invert", str(generated / "image.png"), "--model", str(model_dir), "--prompt", "a red circle",
                                "--steps", "4", "--guidance", "3", "--sampler", "dpm++2m", "--method", "exact",
                                "--method-option", "tol=1e-5", "--method-option", "sweeps=2", "--decoder", "gradient-free",
                                "--decoder-option", "iterations=5", "--out", str(tmp_path / "first")])
    assert first.exit_code == 0, first.output
    report = json.loads((tmp_path / "first" / "report.json").read_text())
    assert report["method_config"]["tol"] == 1e-5 and report["decoder_config"]["iterations"] == 5
    assert report["status"] in ("converged", "iteration limit", "plateau", "not a preimage")
    again = runner.invoke(app, ["invert", str(generated / "image.png"), "--like", str(tmp_path / "first" / "report.json"),
                                "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    noise = [load_file(tmp_path / name / "noise.safetensors")["noise"] for name in ("first", "again")]
    assert torch.equal(*noise)
    repeated = json.loads((tmp_path / "again" / "report.json").read_text())
    assert repeated["method_config"] == report["method_config"] and repeated["decoder_config"] == report["decoder_config"]
    refused = runner.invoke(app, ["invert", str(generated / "image.png"), "--like", str(tmp_path / "nothing.json"),
                                  "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "--like" in refused.output
