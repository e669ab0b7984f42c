"""Measurement leaves the caller's process alone unless asked to track memory."""

from __future__ import annotations

import diffinv.utils.measure as measure_module
from diffinv.utils.measure import measure, track_memory, tracking_memory


def test_untracked_measurement_only_times(monkeypatch):
    touched = []
    monkeypatch.setattr(measure_module, "release_memory", lambda full=False: touched.append("gc and malloc_trim"))
    monkeypatch.setattr(measure_module, "_reset_cpu_peak", lambda: touched.append("VmHWM reset"))
    track_memory(False)  # the test session tracks memory (conftest); step out of it here
    try:
        with measure() as cost:
            sum(range(1000))
    finally:
        track_memory(True)
    assert touched == [] and cost.peak_memory_bytes is None and cost.seconds > 0
    with tracking_memory(), measure() as cost:
        bytearray(50 * 2**20)
    assert touched == ["gc and malloc_trim", "VmHWM reset"] and cost.peak_memory_bytes >= 0


def test_an_inversion_outside_tracking_reports_no_peak(pipe, monkeypatch):
    import diffinv

    monkeypatch.setattr(measure_module, "_reset_cpu_peak", lambda: (_ for _ in ()).throw(AssertionError("reset")))
    track_memory(False)
    try:
        generated = diffinv.generate(pipe, "a red circle", seed=0, steps=2, guidance=1.0)
        result = diffinv.invert(pipe, latent=generated.latent, steps=2, guidance=1.0)
    finally:
        track_memory(True)
    assert generated.peak_memory_bytes is None and result.peak_memory_bytes is None and result.seconds > 0
