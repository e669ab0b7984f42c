"""The decoder stage inside `diffinv.invert`: its progress bar follows the call's, and the report carries the clipped share."""

from __future__ import annotations

import pytest
import torch

import diffinv.pipeline as pipeline
from diffinv.decoder import invert_decoder


@pytest.fixture
def captured(monkeypatch):
    calls: list[dict] = []

    def recording(autoencoder, image, method="encoder", **options):
        calls.append({"method": method, **options})
        return invert_decoder(autoencoder, image, method, **options)

    monkeypatch.setattr(pipeline, "invert_decoder", recording)
    return calls


def _image() -> torch.Tensor:
    image = torch.zeros(1, 3, 16, 16)
    image[:, :, :4] = 1.0  # a quarter of the values at the upper bound
    image[:, 0, 4:6] = -1.0
    return image


def test_progress_reaches_the_decoder_stage(pipe, captured):
    pipeline.invert(pipe, _image(), steps=2, guidance=1.0, decoder="forward-step",
                    decoder_options={"iterations": 1}, progress=True)
    pipeline.invert(pipe, _image(), steps=2, guidance=1.0, decoder="forward-step",
                    decoder_options={"iterations": 1, "progress": False}, progress=True)
    pipeline.invert(pipe, _image(), steps=2, guidance=1.0)
    assert [c["progress"] for c in captured] == [True, False, False]


def test_report_carries_the_clipped_share(pipe, captured):
    result = pipeline.invert(pipe, _image(), steps=2, guidance=1.0)
    expected = (3 * 4 * 16 + 2 * 16) / (3 * 16 * 16)
    assert result.clipped_fraction == pytest.approx(expected)
    assert result.report["clipped_fraction"] == pytest.approx(expected)
    method = captured[0]["method"]  # the resolved configuration: the library's default is clipped
    assert method.name == "encoder" and method.clipped is True
    with pytest.raises(ValueError, match="never clipped"):
        pipeline.invert(pipe, _image() * 1.5, steps=2, guidance=1.0)
    float_image = pipeline.invert(pipe, _image() * 1.5, steps=2, guidance=1.0, decoder_options={"clipped": False})
    assert float_image.converged
