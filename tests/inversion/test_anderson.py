"""Anderson acceleration and the shared fixed-point loop on a linear problem with a known answer."""

from __future__ import annotations

import pytest
import torch

from diffinv.inversion.anderson import Anderson
from diffinv.inversion.iteration import fixed_point


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
    from diffinv.inversion.iteration import Evaluation, solve_iteratively

    def evaluate(z):
        direction = torch.stack([0.5 * (z[0] - 1.0), torch.zeros_like(z[1])])
        residual = torch.stack([(z[0] - 1.0).abs().max(), torch.tensor(1.0)])
        return Evaluation(direction=direction, residual=residual, extra=z * 10)

    start = torch.tensor([[3.0], [5.0]])
    result = solve_iteratively(evaluate, start, max_iter=200, tol=1e-6, anderson=anderson, stall=3)
    assert abs(float(result.latent[0]) - 1.0) <= 1e-6  # went on after latent 1 stopped
    assert float(result.latent[1]) == 5.0
    assert not result.converged and result.stop == "plateau" and result.residual == 1.0
    assert torch.equal(result.extra, result.latent * 10)  # each latent's extra is from its own best iterate


@pytest.mark.parametrize("anderson", [0, 3])
def test_final_update_saves_the_confirming_evaluation_and_still_meets_tol(anderson):
    """With `final_update` the loop returns the update past its last evaluated iterate once the observed
    contraction says it meets tol: fewer evaluations, and the returned point's true residual is within tol."""
    step, solution = contraction(size=30, radius=0.3)
    start = step(torch.zeros_like(solution))  # a warm start (the residual is relative to the iterate's norm)
    measured = fixed_point(step, start, 100, anderson=anderson, tol=1e-8)
    finished = iterate_final(step, start, anderson)
    true_residual = float(((step(finished.latent) - finished.latent).norm(dim=1) / finished.latent.norm(dim=1)).max())
    assert measured.converged and finished.converged and finished.estimated and not measured.estimated
    assert finished.evaluations < measured.evaluations
    assert true_residual <= 3e-8  # an estimate: within a small factor of tol, below the last measured residual
    assert true_residual < finished.residuals[-1]
    assert float((finished.latent - solution).norm() / solution.norm()) < 1e-7


def iterate_final(step, start, anderson):
    from diffinv.inversion.iteration import Evaluation, solve_iteratively

    def evaluate(z):
        difference = z - step(z)
        return Evaluation(difference, difference.norm(dim=1) / z.norm(dim=1).clamp_min(1e-12))

    return solve_iteratively(evaluate, start, max_iter=100, tol=1e-8, anderson=anderson, final_update=True)


def test_final_update_is_not_taken_when_the_iteration_does_not_contract():
    """A slow contraction (0.95 per step) gives no licence to trust the next update: every returned residual is
    measured."""
    step, solution = contraction(size=20, radius=0.95)
    run = iterate_final(step, step(torch.zeros_like(solution)), 0)
    assert not run.estimated
