"""Sampling with diffinv's solver functions reproduces the diffusers pipelines with the matching scheduler."""

from __future__ import annotations

import pytest
import torch

from diffinv.models.denoiser import Denoiser
from diffinv.models.testing import tiny_pipeline
from diffinv.pipeline import generate, seeded_noise
from diffinv.sampler.sampling import sample
from diffinv.sampler.schedule import diffusers_scheduler, make_schedule, reverse

PROMPTS = ["a red circle on a blue background", "a green square"]
#: The diffusion samplers that call the network once per step (the others have their own tests).
SINGLE_CALL = ("ddim", "euler", "dpm++1", "dpm++2m", "dpm++3m")


def diffusers_latent(pipe, name, noise, steps, guidance):
    original = pipe.scheduler
    pipe.scheduler = diffusers_scheduler(name, original.config)
    try:
        return pipe(PROMPTS, latents=noise.clone(), num_inference_steps=steps, guidance_scale=guidance, output_type="latent").images
    finally:
        pipe.scheduler = original


def diffinv_latent(pipe, name, noise, steps, guidance):
    schedule = make_schedule(name, pipe.scheduler.config, steps)
    denoiser = Denoiser.from_pipeline(pipe, PROMPTS, len(PROMPTS), guidance, schedule.prediction_type)
    latent = sample(denoiser, schedule, noise).final
    assert denoiser.nfe == steps
    return latent


@pytest.mark.parametrize("guidance", [1.0, 7.5])
@pytest.mark.parametrize("name", SINGLE_CALL)
@pytest.mark.parametrize("steps", [7, 20])
def test_parity_with_diffusers(pipe, name, steps, guidance):
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(steps))
    expected = diffusers_latent(pipe, name, noise, steps, guidance)
    got = diffinv_latent(pipe, name, noise, steps, guidance)
    assert (got - expected).abs().max() <= 1e-4
    assert (got - expected).norm() / expected.norm() <= 1e-5


@pytest.mark.parametrize(
    "prediction_type,spacing", [("v_prediction", "trailing"), ("epsilon", "linspace"), ("v_prediction", "leading")]
)
@pytest.mark.parametrize("name", ["ddim", "euler", "dpm++2m", "dpm++3m"])
def test_parity_other_configs(name, prediction_type, spacing):
    pipe = tiny_pipeline(prediction_type=prediction_type, timestep_spacing=spacing)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    expected = diffusers_latent(pipe, name, noise, 12, 7.5)
    got = diffinv_latent(pipe, name, noise, 12, 7.5)
    assert (got - expected).abs().max() <= 1e-4


def test_generate_uses_diffusers_seeded_noise(pipe):
    noise = seeded_noise(pipe, 3)
    expected = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(3), output_type="latent")
    assert noise.shape == (1, 4, 8, 8)
    assert torch.equal(noise, torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)))
    result = generate(pipe, "a red circle", seed=3, steps=2, guidance=7.5)
    assert (result.latent - expected.images).abs().max() <= 1e-4
    assert result.image.shape == (1, 3, 16, 16)
    assert result.images[0].size == (16, 16)


def test_dpm_orders_follow_diffusers_rules(pipe):
    orders = [step.order for step in make_schedule("dpm++3m", pipe.scheduler.config, 10).steps]
    assert orders == [1, 2, 3, 3, 3, 3, 3, 3, 2, 1]  # warm-up, then lower order at the end below 15 steps
    orders = [step.order for step in make_schedule("dpm++2m", pipe.scheduler.config, 20).steps]
    assert orders == [1] + [2] * 18 + [1]  # final_sigmas_type "zero" forces a first-order last step


def test_reverse_mirrors_the_schedule(pipe):
    schedule = make_schedule("dpm++2m", pipe.scheduler.config, 10)
    inverse = reverse(schedule)
    assert [step.index for step in inverse] == list(range(9, -1, -1))
    for forward, backward in zip(reversed(schedule.steps), inverse):
        assert (backward.start, backward.end, backward.timestep) == (forward.end, forward.start, forward.timestep)
    assert inverse[-1].history == ()  # sampling step 0 is first order
    assert inverse[-2].history == (schedule.steps[2].end,)  # the level the previous inverse step started from


@pytest.mark.parametrize("bad", [{"name": "heun3"}, {"num_steps": 0}])
def test_bad_schedule_arguments(pipe, bad):
    arguments = {"name": "ddim", "config": pipe.scheduler.config, "num_steps": 10, **bad}
    with pytest.raises(ValueError):
        make_schedule(**arguments)


def test_euler_with_karras_sigmas_and_fractional_timesteps():
    pipe = tiny_pipeline(timestep_spacing="linspace")
    pipe.scheduler.register_to_config(use_karras_sigmas=True)
    schedule = make_schedule("euler", pipe.scheduler.config, 9)
    assert any(isinstance(t, float) for t in schedule.timesteps)  # Karras sigmas fall between training timesteps
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    expected = diffusers_latent(pipe, "euler", noise, 9, 3.0)
    got = diffinv_latent(pipe, "euler", noise, 9, 3.0)
    assert (got - expected).abs().max() <= 1e-4


def test_euler_inverts_like_ddim(pipe):
    """Euler is DDIM in the sigma parametrisation: on the same timesteps the two sample the same latent."""
    from diffinv.inversion import invert_sampler

    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    euler = make_schedule("euler", pipe.scheduler.config, 10)
    denoiser = Denoiser.from_pipeline(pipe, PROMPTS[:1], 1, 1.0, euler.prediction_type)
    latent = sample(denoiser, euler, noise).final
    naive = invert_sampler(denoiser, euler, latent, method="naive")
    exact = invert_sampler(denoiser, euler, latent, method="exact", tol=1e-5, anderson=3)  # above float32 round-off
    naive_error = ((naive.noise - noise).norm() / noise.norm()) ** 2
    exact_error = ((exact.noise - noise).norm() / noise.norm()) ** 2
    assert exact_error < naive_error / 100 and exact.converged
