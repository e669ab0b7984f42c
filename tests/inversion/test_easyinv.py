"""EasyInv: naive inversion plus the documented blend inside the window; its options, fp16, divergence, CLI."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from diffinv.cli import app, quiet_libraries
from diffinv.inversion import METHODS, InversionDiverged, invert_sampler
from diffinv.inversion.methods import EasyInv
from diffinv.inversion.naive import explicit_step
from diffinv.models.denoiser import Denoiser
from diffinv.models.testing import tiny_pipeline
from diffinv.pipeline import invert
from diffinv.sampler.sampling import sample
from diffinv.sampler.schedule import make_schedule, reverse


def setting(pipe, name="ddim", steps=10, guidance=1.0):
    schedule = make_schedule(name, pipe.scheduler.config, steps)
    denoiser = Denoiser.from_pipeline(pipe, "a red circle", 1, guidance, schedule.prediction_type)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return denoiser, schedule, sample(denoiser, schedule, noise).final


@pytest.mark.parametrize("name", ["ddim", "dpm++2m"])
@pytest.mark.parametrize("options", [{"eta": 1.0}, {"window": [0.5, 0.5]}, {"window": [0.0, 0.05]}, {"eta": 1.0, "order": "code"}])
def test_no_blend_is_naive_exactly(pipe, name, options):
    denoiser, schedule, latent = setting(pipe, name)
    naive = invert_sampler(denoiser, schedule, latent, "naive")
    easy = invert_sampler(denoiser, schedule, latent, "easyinv", **options)
    assert torch.equal(easy.noise, naive.noise)
    assert easy.nfe == naive.nfe == 10


def test_window_picks_the_documented_latents():
    assert EasyInv().build().blended(10) == [1, 2]  # 0.5 < i < 2.5
    assert EasyInv().build().blended(50) == list(range(3, 13))  # 2.5 < i < 12.5, as in the authors' code
    assert EasyInv(preset="sdxl").build().blended(50) == list(range(43, 48))
    assert EasyInv(preset="sdxl").build().eta == 0.8 and EasyInv().build().eta == 0.5
    assert EasyInv(eta=1.0).build().blended(50) == []


@pytest.mark.parametrize("order", ["paper", "code"])
def test_blend_matches_a_hand_computation(pipe, order):
    denoiser, schedule, latent = setting(pipe, "ddim", steps=10)
    eta = 0.3
    result = invert_sampler(denoiser, schedule, latent, "easyinv", eta=eta, order=order, keep_trajectory=True)
    steps = reverse(schedule)
    with torch.inference_mode():
        z0 = latent
        z1_naive, _ = explicit_step(denoiser, z0, steps[0], [])
        if order == "paper":  # z_i <- eta z_i + (1 - eta) z_{i-1} right after the step; the next step sees the blend
            z1 = eta * z1_naive + (1 - eta) * z0
            z2_naive, _ = explicit_step(denoiser, z1, steps[1], [])
            z2 = eta * z2_naive + (1 - eta) * z1
            z3, _ = explicit_step(denoiser, z2, steps[2], [])
        else:  # the network sees the unblended latent, the update starts from the blended one
            z1 = z1_naive
            start1 = eta * z1 + (1 - eta) * z0
            z2, _ = explicit_step(denoiser, start1, steps[1], [], evaluate_at=z1)
            start2 = eta * z2 + (1 - eta) * start1
            z3, _ = explicit_step(denoiser, start2, steps[2], [], evaluate_at=z2)
    for mine, hand in zip(result.trajectory[1:4], (z1, z2, z3)):
        assert torch.allclose(mine, hand, atol=1e-6, rtol=0)
    naive = invert_sampler(denoiser, schedule, latent, "naive", keep_trajectory=True)
    assert not torch.allclose(result.trajectory[2], naive.trajectory[2])
    assert torch.equal(result.trajectory[0], naive.trajectory[0])


@pytest.mark.parametrize("name", ["ddim", "dpm++2m"])
def test_same_network_calls_as_naive(pipe, name):
    denoiser, schedule, latent = setting(pipe, name, steps=20, guidance=7.5)
    for order in ("paper", "code"):
        assert invert_sampler(denoiser, schedule, latent, "easyinv", order=order).nfe == 20


@pytest.mark.parametrize(
    "options, message",
    [
        ({"eta": 1.5}, r"eta of inversion method .easyinv. must be in \[0, 1\]"),
        ({"eta": float("nan")}, "option eta of inversion method .easyinv. must be a finite number"),
        ({"window": [0.3, 0.1]}, "0 <= start <= end <= 1"),
        ({"window": "late"}, "window of inversion method 'easyinv' must be a list of numbers"),
        ({"order": "sideways"}, "order of inversion method 'easyinv' must be one of paper, code"),
        ({"preset": "sd3"}, "preset of inversion method 'easyinv' must be one of None, sd, sdxl"),
        ({"etta": 0.5}, "unknown option"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        METHODS.resolve("easyinv", options)


def test_solver_needs_prepare(pipe):
    denoiser, schedule, latent = setting(pipe)
    with pytest.raises(RuntimeError, match="prepare"):
        EasyInv().build()(denoiser, latent, reverse(schedule)[0], [], 0)


@pytest.mark.parametrize("method", ["naive", "easyinv", "renoise"])
def test_float16_runs_without_nan(method):
    pipe16 = tiny_pipeline().to(torch.float16)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    result = invert(pipe16, image=images, steps=8, guidance=3.0, method=method,
                    method_options={"renoise_steps": 2} if method == "renoise" else None)
    assert pipe16.unet.dtype == torch.float16 and result.noise.dtype == torch.float32
    assert torch.isfinite(result.noise).all()


@pytest.mark.parametrize("method, options", [("easyinv", {}), ("easyinv", {"order": "code"}), ("renoise", {"renoise_steps": 2})])
def test_nan_stops_with_the_step_named(pipe, method, options):
    denoiser, schedule, latent = setting(pipe, steps=10)
    bad_timestep = reverse(schedule)[4].timestep
    real_output = denoiser.output

    def poisoned(x, timestep):
        out = real_output(x, timestep)
        return out * float("nan") if timestep == bad_timestep else out

    denoiser.output = poisoned
    with pytest.raises(InversionDiverged, match=rf"inverse step 5/10 \(timestep {bad_timestep}\)"):
        invert_sampler(denoiser, schedule, latent, method, **options)


def test_cli_reports_divergence_in_one_line(model_dir, tmp_path):
    quiet_libraries()  # as the `diffinv` entry point does: library warnings would share stderr with the error
    out = tmp_path / "inv"
    for name, value, message in (("nan", float("nan"), "non-finite values"),  # refused before any work
                                 ("huge", 1e6, "overflowed in float16")):  # the network's output, in half precision
        bad = tmp_path / f"{name}.safetensors"
        save_file({"latent": torch.full((1, 4, 8, 8), value)}, str(bad))
        result = CliRunner().invoke(app, ["invert", "--latent", str(bad), "--model", str(model_dir), "--steps", "4",
                                          "--method", "easyinv", "--dtype", "float16", "--out", str(out)])
        assert result.exit_code == 2
        assert result.output.strip().count("\n") == 0 and message in result.output, result.output
        assert not out.exists()
