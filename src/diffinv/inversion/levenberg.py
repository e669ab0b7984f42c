"""Levenberg-Marquardt for one inverse step (matrix-free or dense): for the steps first-order solvers cannot finish.

Near t = 0 with strong guidance a sampling step Phi is badly conditioned (singular values down to 1e-4
and eigenvalues with negative real part on the first bundled model): the forward step and fixed-point
iteration drift along the negative directions, and gradient descent stalls where J^T r is nearly zero
although r is not. A Gauss-Newton step does not care about either. Each outer iteration solves the
damped least-squares problem

    min_d ||J d - r||^2 + lambda ||d||^2,        r = Phi(z) - x_t,  J = dPhi/dz at z,

and z <- z - d is kept if the residual fell (then lambda /= 3), else lambda *= 4 and the step is
retried. `matrix_free` solves it with LSMR (scipy), which needs only products J v (forward-mode AD
through the UNet) and J^T u (reverse mode, on one retained graph per outer iteration): nothing forms a
Jacobian, so the cost per outer iteration is `inner` Jacobian-vector and `inner` vector-Jacobian
products whatever the latent size. With `dense` the full Jacobian of each latent is formed (one
product per unknown, batched) and the damped normal equations (J^T J + lambda I) d = J^T r are solved
directly: exact where LSMR's few iterations leave the smallest singular directions unresolved,
affordable for small latents only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, lsmr

#: (z) -> (J v for a tangent v, J^T u for a cotangent u), both at z; built once per outer iteration.
Linearize = Callable[[torch.Tensor], tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]]
#: (r, damping) -> the step d minimising ||J d - r||^2 + damping ||d||^2, for the J of one point.
DampedSolve = Callable[[torch.Tensor, float], torch.Tensor]
#: (z) -> the damped solver at z; called once per outer iteration.
SolverAt = Callable[[torch.Tensor], DampedSolve]


@dataclass
class LevenbergResult:
    """The best iterate, its relative residual, and the residual after every outer iteration."""

    latent: torch.Tensor
    residual: float
    converged: bool
    stop: str
    residuals: list[float] = field(default_factory=list)


def _to_tensor(vector: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(vector.astype(np.float32)).view(like.shape).to(like.device)


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.flatten().double().cpu().numpy()


def jacobian_operator(
    jvp: Callable[[torch.Tensor], torch.Tensor], vjp: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor
) -> LinearOperator:
    """The Jacobian as a scipy `LinearOperator` on flat float64 vectors (what LSMR iterates on)."""
    n = like.numel()
    return LinearOperator(
        (n, n), dtype=np.float64,
        matvec=lambda v: _to_numpy(jvp(_to_tensor(v, like))),
        rmatvec=lambda u: _to_numpy(vjp(_to_tensor(u, like))),
    )


def matrix_free(linearize: Linearize, inner: int = 50) -> SolverAt:
    """Damped steps by LSMR on J v / J^T u products (`inner` iterations each)."""

    def at(z: torch.Tensor) -> DampedSolve:
        operator = jacobian_operator(*linearize(z), like=z)

        def solve(r: torch.Tensor, damping: float) -> torch.Tensor:
            solution = lsmr(operator, _to_numpy(r), damp=float(np.sqrt(damping)), maxiter=inner, atol=1e-7, btol=1e-7)[0]
            return _to_tensor(solution, z)

        return solve

    return at


def dense(jacobian: Callable[[torch.Tensor], torch.Tensor]) -> SolverAt:
    """Damped steps from full Jacobians: `jacobian(z)` gives [B, n, n] (latents do not interact), each
    latent's normal equations are solved in float64."""

    def at(z: torch.Tensor) -> DampedSolve:
        jac = jacobian(z).double()
        gram = jac.transpose(1, 2) @ jac
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)

        def solve(r: torch.Tensor, damping: float) -> torch.Tensor:
            rhs = jac.transpose(1, 2) @ r.reshape(r.shape[0], -1, 1).double()
            step = torch.linalg.solve(gram + damping * eye, rhs)
            return step.reshape(r.shape).to(r.dtype)

        return solve

    return at


def levenberg_marquardt(
    residual_fn: Callable[[torch.Tensor], torch.Tensor],
    solver: SolverAt,
    start: torch.Tensor,
    relative: Callable[[torch.Tensor], torch.Tensor],
    tol: float | None,
    max_iter: int = 10,
    damping: float = 1e-2,
    retries: int = 6,
) -> LevenbergResult:
    """Minimise ||residual_fn(z)|| from `start` with damped steps from `solver` (`matrix_free` or
    `dense`); `relative(r)` gives each latent's relative residual, and the largest is what `tol` and the
    result refer to.

    Stops at `tol`, after `max_iter` accepted or rejected outer iterations, or ("stalled") when
    `retries` increases of the damping in a row do not lower the residual.
    """
    z, r = start, residual_fn(start)
    worst = float(relative(r).max())
    history, damping_now, stop = [worst], float(damping), "max_iter"
    for _ in range(max_iter):
        if tol is not None and worst <= tol:
            stop = "tolerance"
            break
        solve = solver(z)
        for _attempt in range(retries):
            candidate = z - solve(r, damping_now)
            r_candidate = residual_fn(candidate)
            if torch.isfinite(r_candidate).all() and r_candidate.norm() < r.norm():
                z, r, damping_now = candidate, r_candidate, damping_now / 3
                break
            damping_now *= 4
        else:
            stop = "stalled"
            break
        worst = float(relative(r).max())
        history.append(worst)
    converged = tol is not None and worst <= tol
    return LevenbergResult(latent=z, residual=worst, converged=converged, stop="tolerance" if converged else stop,
                           residuals=history)
