"""The registered samplers with their own stepper (PNDM, UniPC, Heun, DEIS, flow Heun) reproduce the diffusers
pipelines with the matching scheduler: latents and decoded images, guidance 1 and 7.5, the config an SD
folder ships and the scheduler's default config."""

from __future__ import annotations

import pytest
import torch

import diffinv
from diffinv.models.denoiser import Denoiser
from diffinv.models.testing import tiny_pipeline, tiny_sd3_pipeline
from diffinv.sampler.sampling import sample
from diffinv.sampler.registry import ENTRIES, get_sampler, sampler_names, sampler_help
from diffinv.sampler.schedule import diffusers_scheduler, make_schedule

PROMPTS = ["a red circle on a blue background", "a green square"]
NEW = ("pndm", "unipc", "unipc3", "heun", "deis", "deis3")


def network_calls(name: str, steps: int) -> int:
    """What the diffusers pipeline spends: PNDM calls twice on its first step, Heun twice on all but its last."""
    if name == "pndm":
        return steps + 1 if steps > 1 else 1
    if name in ("heun", "flow-heun"):
        return 2 * steps - 1
    return steps


def compare(pipe, name, steps, guidance):
    """diffinv's generate against the pipeline: latents to 1e-4 (per 10 units of the latent's magnitude: float32
    round-off grows with it, and this random model's latents reach 30-90 where a trained model's stay below ~5;
    DEIS order 3 also computes its weights in float32, 1.5e-5 off at 20 steps), decoded images to 1e-4."""
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(steps))
    settings = dict(latents=noise.clone(), num_inference_steps=steps, guidance_scale=guidance)
    expected = pipe(PROMPTS, output_type="latent", **settings).images
    image = pipe(PROMPTS, output_type="pt", **settings).images
    got = diffinv.generate(pipe, PROMPTS, noise=noise, steps=steps, guidance=guidance, sampler=name)
    assert got.sampler == name and got.nfe == network_calls(name, steps)
    assert (got.latent - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()) / 10)
    assert (got.latent - expected).norm() / expected.norm() <= 1e-5
    assert (got.image - (image * 2 - 1)).abs().max() <= 1e-4


def swapped(pipe, scheduler):
    """The pipeline with `scheduler` swapped in (restored by the caller)."""
    original = pipe.scheduler
    pipe.scheduler = scheduler
    return original


@pytest.mark.parametrize("guidance", [1.0, 7.5])
@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("steps", [7, 20])
def test_parity_with_the_sd_folder_config(pipe, name, steps, guidance):
    original = swapped(pipe, diffusers_scheduler(name, pipe.scheduler.config))
    try:
        compare(pipe, name, steps, guidance)
    finally:
        pipe.scheduler = original


@pytest.mark.parametrize("guidance", [1.0, 7.5])
@pytest.mark.parametrize("name", NEW)
def test_parity_with_the_default_config(pipe, name, guidance):
    sampler = get_sampler(name)
    original = swapped(pipe, sampler.scheduler_class(**sampler.options))
    try:
        compare(pipe, name, 12, guidance)
    finally:
        pipe.scheduler = original


@pytest.mark.parametrize("disabled", [[0, 1, 2], [3]])
def test_unipc_honours_disable_corrector(pipe, disabled):
    from diffusers import UniPCMultistepScheduler

    config = diffusers_scheduler("unipc", pipe.scheduler.config).config
    original = swapped(pipe, UniPCMultistepScheduler.from_config(config, disable_corrector=disabled))
    try:
        steps = make_schedule("unipc", pipe.scheduler.config, 8).steps
        assert [index for index, step in enumerate(steps) if index and not step.extra] == [i + 1 for i in disabled]
        compare(pipe, "unipc", 8, 7.5)
        baseline = make_schedule("unipc", config, 8)  # with the corrector everywhere the latent differs
        noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(8))
        plain = sample(Denoiser.from_pipeline(pipe, PROMPTS, 2, 7.5, "epsilon"), baseline, noise).final
        assert (plain - diffinv.generate(pipe, PROMPTS, noise=noise, steps=8, guidance=7.5, sampler="unipc").latent).abs().max() > 1e-3
    finally:
        pipe.scheduler = original


@pytest.mark.parametrize("kind", ["v_prediction", "epsilon-linspace"])
@pytest.mark.parametrize("name", ["pndm", "heun", "unipc", "deis"])
def test_parity_other_configs(name, kind):
    pipe = tiny_pipeline(prediction_type="v_prediction") if kind == "v_prediction" else tiny_pipeline(timestep_spacing="linspace")
    pipe.scheduler = diffusers_scheduler(name, pipe.scheduler.config)
    compare(pipe, name, 9, 7.5)


@pytest.fixture(scope="module")
def sd3():
    return tiny_sd3_pipeline()


@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_flow_heun_parity_on_sd3(sd3, guidance):
    original = swapped(sd3, diffusers_scheduler("flow-heun", sd3.scheduler.config))
    try:
        compare(sd3, "flow-heun", 8, guidance)
    finally:
        sd3.scheduler = original


def test_listing_the_samplers_imports_neither_torch_nor_diffusers():
    import subprocess
    import sys

    code = ("import sys; from diffinv.sampler.registry import sampler_help; text = sampler_help(); "
            "assert 'pndm' in text and 'flow-heun' in text; print('torch' in sys.modules, 'diffusers' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == ["False", "False"]


def test_registry_lists_every_sampler_and_refuses_stochastic_ones(pipe):
    assert set(NEW) | {"ddim", "euler", "dpm++1", "dpm++2m", "dpm++3m"} == set(sampler_names(flow=False))
    assert set(sampler_names(flow=True)) == {"flow-euler", "flow-heun"}
    assert all(name in sampler_help() for name in ENTRIES)
    for name in ("euler-ancestral", "ddpm", "lcm", "dpm++sde"):
        with pytest.raises(ValueError, match="is stochastic: it adds fresh noise at every step, so its images cannot be inverted"):
            make_schedule(name, pipe.scheduler.config, 10)
    with pytest.raises(ValueError, match="does not fit a diffusion"):
        make_schedule("flow-heun", pipe.scheduler.config, 10)


@pytest.mark.parametrize(
    "class_name,options,chosen,note",
    [
        ("PNDMScheduler", {"skip_prk_steps": True}, "pndm", "the model folder's own (PNDMScheduler)"),
        ("UniPCMultistepScheduler", {"solver_order": 3}, "unipc3", "the model folder's own"),
        ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, "ddim", "is stochastic"),
        ("PNDMScheduler", {"skip_prk_steps": False}, "ddim", "diffinv does not have PNDMScheduler with this config"),
        ("KarrasVeScheduler", {}, "ddim", "diffinv does not have KarrasVeScheduler"),
    ],
)
def test_the_model_folders_scheduler_is_the_default(pipe, class_name, options, chosen, note):
    config = {**pipe.scheduler.config, **options, "_class_name": class_name}  # as a loaded folder's config reads
    schedule = make_schedule(None, config, 10)
    assert schedule.name == chosen and note in schedule.note
    assert make_schedule("ddim", config, 10).note is None  # a named sampler needs no note
