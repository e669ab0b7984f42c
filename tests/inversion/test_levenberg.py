"""Levenberg-Marquardt (matrix-free and with full Jacobians) on a map the forward step cannot invert."""

from __future__ import annotations

import pytest
import torch

from diffinv.inversion.iteration import Evaluation, StepSize, per_latent_norm, solve_iteratively
from diffinv.inversion.levenberg import dense, levenberg_marquardt, matrix_free


def folded_map(n: int = 24, seed: int = 0):
    """Phi(z) = A z + 0.05 tanh(z), A with eigenvalues from -0.5 to 1.2 (some negative, one 1e-3)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen))
    eigenvalues = torch.linspace(-0.5, 1.2, n)
    eigenvalues[n // 3] = 1e-3
    a = q @ torch.diag(eigenvalues) @ q.T

    def phi(z: torch.Tensor) -> torch.Tensor:
        return (z.flatten(1) @ a.T + 0.05 * torch.tanh(z.flatten(1))).view_as(z)

    truth = torch.randn(1, n, generator=gen)
    return phi, truth, phi(truth)


def linearizer(phi):
    def linearize(z):
        _, vjp = torch.func.vjp(phi, z)
        return (lambda v: torch.func.jvp(phi, (z,), (v,))[1]), (lambda u: vjp(u)[0])
    return linearize


def test_lm_inverts_a_map_with_negative_eigenvalues():
    phi, truth, target = folded_map()
    start = truth + 0.05 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(1))
    relative = lambda r: per_latent_norm(r) / per_latent_norm(target)  # noqa: E731

    def forward_step(z):
        difference = phi(z) - target
        return Evaluation(direction=difference, residual=relative(difference))

    plain = solve_iteratively(forward_step, start, max_iter=300, tol=1e-6, step_size=StepSize(rho=0.5))
    lm = levenberg_marquardt(lambda z: phi(z) - target, matrix_free(linearizer(phi), 50), start, relative, tol=1e-6, max_iter=20)
    assert not plain.converged  # the negative directions push the forward step away
    assert lm.converged and lm.stop == "tolerance" and lm.residual <= 1e-6
    assert float((lm.latent - truth).norm() / truth.norm()) < 1e-3
    assert lm.residuals[0] > lm.residuals[-1] and len(lm.residuals) <= 21


def test_lm_never_returns_a_worse_point():
    phi, truth, target = folded_map(seed=3)
    relative = lambda r: per_latent_norm(r) / per_latent_norm(target)  # noqa: E731
    lm = levenberg_marquardt(lambda z: phi(z) - target, matrix_free(linearizer(phi), 2), truth + 0.3, relative, tol=None, max_iter=3)
    assert all(later <= earlier for earlier, later in zip(lm.residuals, lm.residuals[1:]))
    assert not lm.converged and lm.stop in ("max_iter", "stalled")


def full_jacobian(phi):
    """[1, n, n] Jacobian of phi at a [1, n] point, by autograd (what `dense` expects)."""
    return lambda z: torch.autograd.functional.jacobian(lambda v: phi(v[None])[0], z[0])[None]


def test_dense_lm_converges_in_few_iterations():
    phi, truth, target = folded_map(seed=2)
    start = truth + 0.05 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(4))
    relative = lambda r: per_latent_norm(r) / per_latent_norm(target)  # noqa: E731
    lm = levenberg_marquardt(lambda z: phi(z) - target, dense(full_jacobian(phi)), start, relative, tol=1e-6, max_iter=8)
    assert lm.converged and lm.residual <= 1e-6  # float32 map: its rounding floor is near 1e-7
    assert float((lm.latent - truth).norm() / truth.norm()) < 1e-3


@pytest.mark.parametrize("damping", [1e-6, 1.0])
def test_dense_and_matrix_free_steps_agree(damping):
    """Both solvers minimise ||J d - r||^2 + damping ||d||^2: the same step when LSMR runs to convergence."""
    phi, truth, target = folded_map(n=12, seed=5)
    z = truth + 0.1
    r = phi(z) - target
    exact_step = dense(full_jacobian(phi))(z)(r, damping)
    lsmr_step = matrix_free(linearizer(phi), 200)(z)(r, damping)
    assert torch.allclose(exact_step, lsmr_step, atol=1e-4, rtol=1e-3)
