"""The step probe (`diffinv.inversion.probe`): matrix-free smallest singular values against full Jacobians."""

from __future__ import annotations

import pytest
import torch

from diffinv.inversion.probe import (
    FOLD_MARGIN,
    chosen_steps,
    probe_steps,
    sample_trajectory,
    smallest_singular,
    verdict,
)
from diffinv.models.denoiser import Denoiser
from diffinv.pipeline import pipeline_schedule, seeded_noise


def test_smallest_singular_of_known_matrices():
    """Two 'latents' of 300 entries, each a fixed random matrix with singular values from 1e-3 to 3: the
    estimate finds 1e-3 (in float32 products) within the tolerance, and the largest."""
    generator = torch.Generator().manual_seed(0)
    matrices = []
    for smallest in (1e-3, 0.2):
        q1, _ = torch.linalg.qr(torch.randn(300, 300, generator=generator, dtype=torch.float64))
        q2, _ = torch.linalg.qr(torch.randn(300, 300, generator=generator, dtype=torch.float64))
        values = torch.cat([torch.tensor([smallest]), torch.linspace(0.5, 3.0, 299, dtype=torch.float64)])
        matrices.append((q1 * values) @ q2.T)
    stack = torch.stack(matrices).float()
    jvp = lambda v: torch.einsum("bij,bj->bi", stack, v.reshape(2, -1)).reshape(v.shape)  # noqa: E731
    vjp = lambda u: torch.einsum("bji,bj->bi", stack, u.reshape(2, -1)).reshape(u.shape)  # noqa: E731
    found = smallest_singular(jvp, vjp, (2, 3, 10, 10), iterations=300, tol=1e-3)
    assert all(found.converged)
    assert found.values[0] == pytest.approx(1e-3, rel=2e-3) and found.values[1] == pytest.approx(0.2, rel=2e-3)
    assert all(largest == pytest.approx(3.0, rel=1e-3) for largest in found.largest)
    assert found.products == 2 * max(found.iterations)
    capped = smallest_singular(jvp, vjp, (2, 3, 10, 10), iterations=3, tol=1e-3)
    assert not any(capped.converged) and capped.iterations == [3, 3]
    assert all(estimate >= value for estimate, value in zip(capped.values, found.values))  # an upper bound


@pytest.mark.parametrize("sampler,guidance", [("ddim", 1.0), ("dpm++2m", 5.0), ("pndm", 3.0)])
def test_matrix_free_agrees_with_full_jacobians(pipe, sampler, guidance):
    """On the tiny random pipeline (latents of 256 entries) the matrix-free smallest singular value of each
    probed step lies within 5% of the full Jacobian's (in fact within the 1% tolerance), and the step to sigma 0
    has no margin."""
    schedule = pipeline_schedule(pipe, sampler, 4)
    denoiser = Denoiser.from_pipeline(pipe, ["a red circle", "a blue square"], 2, guidance, schedule.prediction_type)
    noise = torch.cat([seeded_noise(pipe, seed) for seed in (0, 1)])
    trajectory = sample_trajectory(denoiser, schedule, noise)
    rows = probe_steps(denoiser, trajectory, [0, 3], labels=[{"seed": 0}, {"seed": 1}])
    assert len(rows) == 4 and [r["seed"] for r in rows] == [0, 1, 0, 1]
    for row in rows:
        assert row["converged"] and "negative_eigenvalues" in row  # 256 entries: full Jacobians by default
        assert abs(row["relative_difference"]) < 0.05, row
        assert row["min_singular"] >= row["full_min_singular"] * (1 - 1e-4)  # an upper bound
        assert row["nfe"] > 0 and row["seconds"] > 0
    assert rows[0]["margin"] == pytest.approx(rows[0]["min_singular"] / rows[0]["floor"])
    if sampler == "dpm++2m":
        assert rows[-1]["floor"] == 0.0 and rows[-1]["margin"] is None


def test_probing_a_prefix_and_skipping_full_jacobians(pipe):
    schedule = pipeline_schedule(pipe, "dpm++2m", 6)
    denoiser = Denoiser.from_pipeline(pipe, "a red circle", 1, 7.5, schedule.prediction_type)
    trajectory = sample_trajectory(denoiser, schedule, seeded_noise(pipe, 0), until=2)
    assert trajectory.sampled == 2
    rows = probe_steps(denoiser, trajectory, [1], full=False, iterations=2)
    assert "negative_eigenvalues" not in rows[0] and rows[0]["iterations"] == 2 and not rows[0]["converged"]
    assert rows[0]["verdict"].endswith("?")  # an unconverged estimate above the threshold proves nothing
    with pytest.raises(ValueError, match="was not sampled"):
        probe_steps(denoiser, trajectory, [3])
    with pytest.raises(ValueError, match="out of range"):
        probe_steps(denoiser, trajectory, [6])


def test_chosen_steps_and_verdicts():
    assert chosen_steps(10) == list(range(10))
    assert chosen_steps(10, first=3) == [0, 1, 2]
    assert chosen_steps(10, first=2, last=2, at=(5, -1)) == [0, 1, 5, 8, 9]
    for bad in (dict(first=11), dict(last=-1), dict(at=(10,)), dict(at=(-11,))):
        with pytest.raises(ValueError, match="out of range"):
            chosen_steps(10, **bad)
    assert verdict(FOLD_MARGIN / 2, None) == "fold" and verdict(2.0, 1) == "fold"
    assert verdict(0.3, 0) == "weak" and verdict(1.1, 0) == "ok" and verdict(None, None) == "-"
