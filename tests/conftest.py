"""Shared fixtures: tiny random-weight pipelines built from configs (no download), in memory and on disk."""

from __future__ import annotations

import pytest
import torch

from diffinv.models.testing import save_tiny_pipeline, tiny_pipeline

torch.set_num_threads(1)  # tiny models: one thread is fastest and keeps parallel test runs from thrashing


@pytest.fixture(scope="session")
def pipe():
    """A tiny SD-1.x-style pipeline (epsilon prediction, leading spacing), latents 4x8x8, images 16x16."""
    return tiny_pipeline()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """The same tiny pipeline saved as a diffusers folder."""
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipeline")


@pytest.fixture(autouse=True, scope="session")
def measured_memory():
    """The tests check the reports' peak memory, so they measure it, as the CLI and the benchmarks do."""
    from diffinv.utils.measure import tracking_memory

    with tracking_memory():
        yield
