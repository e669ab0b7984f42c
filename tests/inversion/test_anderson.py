"""Anderson acceleration and the shared fixed-point loop on a linear problem with a known answer."""

from __future__ import annotations

import pytest
import torch

from diffinv.inversion.anderson import Anderson
from diffinv.inversion.implicit import fixed_point


def contraction(seed: int = 0, size: int = 40, radius: float = 0.95):
    """z -> A z + b with a symmetric A of spectral radius `radius` (two rows: a batch of two problems)."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(-radius, radius, size, dtype=torch.float64)) @ q.T
    b = torch.randn(2, size, generator=generator, dtype=torch.float64)
    solution = torch.linalg.solve(torch.eye(size, dtype=torch.float64) - a, b.T).T
    return (lambda z: z @ a.T + b), solution


def test_anderson_beats_plain_iteration():
    step, solution = contraction()
    start = torch.zeros_like(solution)
    plain = fixed_point(step, start, 60)
    fast = fixed_point(step, start, 60, anderson=5)
    error = lambda run: float((run.latent - solution).norm() / solution.norm())  # noqa: E731
    assert error(fast) < error(plain) / 100
    assert len(fast.residuals) == 60 and len(fast.iterates) == 60


def test_tolerance_stops_early_and_full_window_is_exact_quickly():
    step, solution = contraction(size=20)
    run = fixed_point(step, torch.zeros_like(solution), 200, anderson=20, tol=1e-10)
    assert run.converged and run.stop == "tolerance" and run.evaluations <= 25


def test_averaging_and_anderson_are_exclusive_and_window_is_checked():
    step, solution = contraction()
    with pytest.raises(ValueError):
        fixed_point(step, torch.zeros_like(solution), 5, anderson=2, average=True)
    with pytest.raises(ValueError):
        Anderson(0)


def test_rows_are_mixed_independently():
    step, solution = contraction()
    both = fixed_point(step, torch.zeros_like(solution), 40, anderson=5)
    first = fixed_point(lambda z: step(torch.cat([z, torch.zeros_like(z)]))[:1], torch.zeros_like(solution[:1]), 40, anderson=5)
    assert torch.allclose(both.latent[:1], first.latent, atol=1e-12)


@pytest.mark.parametrize("anderson", [0, 2])
def test_a_stalled_latent_does_not_stop_the_rest_of_the_batch(anderson):
    """Latent 0 contracts towards 1 (halving its error each plain step); latent 1 has no solution (a constant
    residual) and plateaus after 3 evaluations. Latent 0 must still reach the tolerance, latent 1 stay put."""
    from diffinv.inversion.implicit import Evaluation, iterate

    def evaluate(z):
        direction = torch.stack([0.5 * (z[0] - 1.0), torch.zeros_like(z[1])])
        residual = torch.stack([(z[0] - 1.0).abs().max(), torch.tensor(1.0)])
        return Evaluation(direction=direction, residual=residual, extra=z * 10)

    start = torch.tensor([[3.0], [5.0]])
    result = iterate(evaluate, start, max_iter=200, tol=1e-6, anderson=anderson, stall=3)
    assert abs(float(result.latent[0]) - 1.0) <= 1e-6  # went on after latent 1 stopped
    assert float(result.latent[1]) == 5.0
    assert not result.converged and result.stop == "plateau" and result.residual == 1.0
    assert torch.equal(result.extra, result.latent * 10)  # each latent's extra is from its own best iterate
