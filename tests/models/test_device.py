"""Devices by name, and out-of-memory errors turned into one line that says which option lowers them."""

from __future__ import annotations

import pytest
import torch

from diffinv.models import device as devices
from diffinv.models.device import OutOfMemory, is_out_of_memory, out_of_memory_hint, resolve_device
from diffinv.models.loading import load


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(devices, "_gpu_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(devices, "_gpu_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_default_is_the_cpu_without_a_gpu(no_gpu):
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("") == torch.device("cpu")


def test_default_is_the_first_gpu(two_gpus):
    assert resolve_device(None) == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("CUDA:1") == torch.device("cuda", 1)


def test_names_and_devices_accepted(no_gpu):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name, message", [
    ("cuda", "torch sees no CUDA GPU"), ("cuda:0", "torch sees no CUDA GPU"), ("mps", "no Apple MPS backend"),
    ("tpu", "unknown device 'tpu'"), ("cpu:1", "the CPU is 'cpu'"), ("cuda:x", "unknown device"),
])
def test_unavailable_devices_are_one_line_errors(no_gpu, name, message):
    with pytest.raises(ValueError, match=message) as caught:
        resolve_device(name)
    assert "\n" not in str(caught.value)


def test_a_gpu_index_past_the_last_names_the_count(two_gpus):
    with pytest.raises(ValueError, match=r"has 2 CUDA devices \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_load_refuses_an_unavailable_device_before_loading(no_gpu, tmp_path):
    with pytest.raises(ValueError, match="no CUDA GPU"):
        load(tmp_path / "not-even-a-folder", device="cuda:3")


def test_load_puts_the_pipeline_on_the_named_device(model_dir):
    assert load(model_dir, device="cpu").unet.device == torch.device("cpu")


def test_forced_allocation_failure_becomes_one_line_naming_the_option():
    def allocate():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 23.6 GiB total)")

    with pytest.raises(OutOfMemory) as caught:
        with out_of_memory_hint("inverting the decoder (gradient, 4 frames at once)", "lower it with --chunk-size 1"):
            allocate()
    message = str(caught.value)
    assert message == "out of memory while inverting the decoder (gradient, 4 frames at once); lower it with --chunk-size 1"
    assert isinstance(caught.value.__cause__, torch.OutOfMemoryError)


def test_a_real_cpu_allocation_failure_is_recognised():
    with pytest.raises(OutOfMemory, match="allocating a huge tensor"):
        with out_of_memory_hint("allocating a huge tensor", "use less"):
            torch.empty(2**62, dtype=torch.uint8)


def test_other_errors_pass_through():
    with pytest.raises(ValueError, match="not memory"):
        with out_of_memory_hint("anything", "anything"):
            raise ValueError("not memory")
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
