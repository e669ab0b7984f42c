"""Half precision: the network runs in bfloat16/float16, the solver state stays float32, and results land
near float32's; an overflow ends in one error that names the dtype."""

from __future__ import annotations

import copy

import pytest
import torch

from diffinv.inversion import invert_sampler
from diffinv.models.denoiser import Denoiser
from diffinv.models.device import HalfPrecisionOverflow
from diffinv.models.loading import load
from diffinv.models.testing import tiny_pipeline, tiny_sd3_pipeline
from diffinv.pipeline import generate, pipeline_schedule
from diffinv.utils.metrics import nmse

#: bfloat16 keeps 8 significant bits (relative rounding 2^-9 per value); over 10 steps of a tiny network its
#: results differ from float32's by NMSE ~1e-5 (measured: 4e-6 to 3e-5). The bound leaves 30x room and is
#: still far below what a wrong dtype path gives (NMSE of order 1 against the true noise for naive at w=3).
BFLOAT16_NMSE_BOUND = 1e-3
PROMPT = "a red circle"


def _pair(make):
    full = make()
    return full, copy.deepcopy(full).to(torch.bfloat16)


@pytest.mark.parametrize("make", [tiny_pipeline, tiny_sd3_pipeline], ids=["sd", "sd3"])
def test_bfloat16_sampling_lands_near_float32(make):
    full, half = _pair(make)
    reference = generate(full, PROMPT, seed=0, steps=10, guidance=3.0)
    result = generate(half, PROMPT, seed=0, steps=10, guidance=3.0)
    assert result.latent.dtype == torch.float32  # the sampler's state, not the network's dtype
    difference = nmse(result.latent, reference.latent)
    assert 0 < difference < BFLOAT16_NMSE_BOUND  # > 0: the network really ran in bfloat16


@pytest.mark.parametrize("make", [tiny_pipeline, tiny_sd3_pipeline], ids=["sd", "sd3"])
@pytest.mark.parametrize("method", ["naive", "exact"])
def test_bfloat16_inversion_lands_near_float32(make, method):
    full, half = _pair(make)
    latent = generate(full, PROMPT, seed=1, steps=10, guidance=3.0).latent
    noises = []
    for pipe in (full, half):
        schedule = pipeline_schedule(pipe, None, 10)
        denoiser = Denoiser.from_pipeline(pipe, PROMPT, 1, 3.0, schedule.prediction_type)
        result = invert_sampler(denoiser, schedule, latent, method=method)
        assert result.noise.dtype == torch.float32 and result.latent.dtype == torch.float32
        noises.append(result.noise)
    assert 0 < nmse(noises[1], noises[0]) < BFLOAT16_NMSE_BOUND


def test_half_network_output_comes_back_in_the_latents_dtype():
    half = tiny_pipeline().to(torch.bfloat16)
    denoiser = Denoiser.from_pipeline(half, PROMPT, 1, 3.0, "epsilon")
    with torch.inference_mode():
        output = denoiser.output(torch.randn(1, 4, 8, 8), 500)
    assert denoiser.dtype == torch.bfloat16 and output.dtype == torch.float32


def _overflowing(denoiser: Denoiser) -> Denoiser:
    denoiser.network = lambda sample, *args, **kwargs: (torch.full_like(sample, float("inf")),)
    return denoiser


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_overflow_is_one_error_naming_the_dtype(dtype):
    pipe = tiny_pipeline().to(dtype)
    schedule = pipeline_schedule(pipe, None, 4)
    denoiser = _overflowing(Denoiser.from_pipeline(pipe, PROMPT, 1, 1.0, schedule.prediction_type))
    with pytest.raises(HalfPrecisionOverflow, match=str(dtype).removeprefix("torch.")) as caught:
        invert_sampler(denoiser, schedule, torch.randn(1, 4, 8, 8), method="naive")
    assert "\n" not in str(caught.value) and "--dtype float32" in str(caught.value)
    assert isinstance(caught.value, FloatingPointError)  # the CLI's user_errors prints it in one line


def test_float32_overflow_is_left_to_the_solvers():
    pipe = tiny_pipeline()
    schedule = pipeline_schedule(pipe, None, 4)
    denoiser = _overflowing(Denoiser.from_pipeline(pipe, PROMPT, 1, 1.0, schedule.prediction_type))
    with pytest.raises(Exception) as caught:
        invert_sampler(denoiser, schedule, torch.randn(1, 4, 8, 8), method="naive")
    assert not isinstance(caught.value, HalfPrecisionOverflow)


def test_load_accepts_bfloat16(model_dir):
    pipe = load(model_dir, dtype="bfloat16", device="cpu")
    assert pipe.unet.dtype == torch.bfloat16 and pipe.vae.dtype == torch.bfloat16
