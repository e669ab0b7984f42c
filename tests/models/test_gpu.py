"""On a CUDA GPU: the tiny pipelines agree with the CPU in float32, land near it in float16 and bfloat16,
peak memory comes from the CUDA counters, and a real out-of-memory becomes one line. Skipped without CUDA;
`scripts/gpu_check.sh` runs them."""

from __future__ import annotations

import copy

import pytest
import torch

from diffinv.inversion import invert_sampler
from diffinv.models.denoiser import Denoiser
from diffinv.models.device import OutOfMemory, out_of_memory_hint, resolve_device
from diffinv.models.testing import tiny_pipeline, tiny_sd3_pipeline
from diffinv.pipeline import generate, pipeline_schedule
from diffinv.utils.measure import measure
from diffinv.utils.metrics import nmse

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

PROMPT = "a red circle"
#: float32 on the GPU against the CPU: only summation order and TF32 convolutions differ (cuDNN's default).
FLOAT32_BOUND = 1e-4
#: float16 (11 significant bits) and bfloat16 (8) against float32 on the CPU: the CPU bound of
#: tests/models/test_precision.py.
HALF_BOUND = 1e-3


def _on(pipe, dtype):
    return copy.deepcopy(pipe).to(resolve_device("cuda"), dtype)


def _invert(pipe, latent, method):
    schedule = pipeline_schedule(pipe, None, 10)
    denoiser = Denoiser.from_pipeline(pipe, PROMPT, 1, 3.0, schedule.prediction_type)
    return invert_sampler(denoiser, schedule, latent.to(denoiser.device), method=method)


def test_default_device_is_the_first_gpu():
    assert resolve_device(None) == torch.device("cuda", 0)


@pytest.mark.parametrize("make", [tiny_pipeline, tiny_sd3_pipeline], ids=["sd", "sd3"])
@pytest.mark.parametrize("dtype, bound", [(torch.float32, FLOAT32_BOUND), (torch.float16, HALF_BOUND), (torch.bfloat16, HALF_BOUND)])
def test_sampling_parity_with_the_cpu(make, dtype, bound):
    cpu = make()
    reference = generate(cpu, PROMPT, seed=0, steps=10, guidance=3.0).latent
    result = generate(_on(cpu, dtype), PROMPT, seed=0, steps=10, guidance=3.0).latent
    assert result.is_cuda and result.dtype == torch.float32
    assert nmse(result.cpu(), reference) < bound


@pytest.mark.parametrize("method", ["naive", "exact"])
@pytest.mark.parametrize("dtype, bound", [(torch.float32, FLOAT32_BOUND), (torch.float16, HALF_BOUND), (torch.bfloat16, HALF_BOUND)])
def test_inversion_round_trip_on_the_gpu(method, dtype, bound):
    cpu = tiny_pipeline()
    made = generate(cpu, PROMPT, seed=2, steps=10, guidance=3.0)
    reference = _invert(cpu, made.latent, method).noise
    result = _invert(_on(cpu, dtype), made.latent, method)
    assert result.noise.dtype == torch.float32
    assert nmse(result.noise.cpu(), reference) < bound
    if method == "exact":  # exact inversion regenerates its z_0 on the GPU too
        again = generate(_on(cpu, dtype), PROMPT, noise=result.noise, steps=10, guidance=3.0).latent
        assert nmse(again.cpu(), made.latent) < bound


def test_peak_memory_comes_from_the_cuda_counters():
    device = resolve_device("cuda")
    with measure(device) as cost:
        block = torch.ones(16 * 2**20, device=device)  # 64 MiB
        del block
    assert 64 * 2**20 <= cost.peak_memory_bytes < 80 * 2**20


def test_a_real_gpu_out_of_memory_is_one_line():
    device = resolve_device("cuda")
    total = torch.cuda.get_device_properties(device).total_memory
    with pytest.raises(OutOfMemory, match="out of memory while allocating twice the GPU; lower it with --chunk-size") as caught:
        with out_of_memory_hint("allocating twice the GPU", "lower it with --chunk-size"):
            torch.empty(2 * total, dtype=torch.uint8, device=device)
    assert "\n" not in str(caught.value)
