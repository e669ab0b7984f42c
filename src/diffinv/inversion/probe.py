"""Where a sampler folds: each step map's smallest singular value against its floor, matrix-free at any size.

A DDIM step from noise level s to the less noisy t is x -> (sigma_t / sigma_s) x + c x0(x) with c > 0.
For an ideal denoiser the Jacobian of x0 is symmetric positive semi-definite (Tweedie), so the step's
eigenvalues are real and at least sigma_t / sigma_s, its *floor*, and so is its smallest singular value.
A learnt denoiser whose step has an eigenvalue with negative real part, or a smallest singular value far
below the floor, folds the sampler there: two noises reach the same image and no inversion can tell them
apart. The *margin* of a step at a latent is its smallest singular value over the floor (1 or more for the
ideal denoiser). A step to sigma 0 (DPM-Solver++'s last, which inverts the denoiser itself) has floor 0: its
margin is not defined, and its smallest singular value is the denoiser's own smallest gain there.

`smallest_singular` finds the smallest singular value of a Jacobian from products alone, one J v (a
forward-mode pass) and one J^T u (a backward pass) per iteration: Golub-Kahan-Lanczos bidiagonalisation
(Lanczos on J^T J, carried out on J itself so that a singular value of 1e-3 is resolved in float32
products where J^T J's 1e-6 would not be), with full reorthogonalisation and no restart, one independent run
per latent of the batch with the products batched. Its estimate is an upper bound on the smallest singular
value; it has converged when the Ritz pair's residual ||J^T u - s v|| is at most `tol` times the estimate
(a singular value then lies within that distance of it). `step_statistics` is the full-Jacobian check for
small latents: every singular value, and the eigenvalues (with negative real part: a fold for certain).

`probe_steps` probes step maps along given trajectories (`sample_trajectory`), each step with the later
latent as target and the earlier steps' data predictions (or a stepper's records) held fixed, as exact
inversion holds them, and returns one row per (step, latent) with the `verdict`: "fold" when an eigenvalue
has negative real part or the margin is below `FOLD_MARGIN`, "weak" below `WEAK_MARGIN`, else "ok".
Used by `diffinv probe`, by `diffinv.bench.probe` and by the bundled model's training probe.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from diffinv.inversion.step_problem import StepProblem
from diffinv.inversion.sweeps import replay
from diffinv.models.denoiser import Denoiser
from diffinv.sampler.sampling import Trajectory, sample, step_history
from diffinv.sampler.schedule import Schedule
from diffinv.utils.measure import measure

#: Margin (smallest singular value over the floor) below which a step is called a fold. On the bundled model
#: every step with an eigenvalue of negative real part that the full Jacobians found had a margin below
#: 0.13, and the unfolded guidance-3 steps of the same sampler had margins of 0.08 and above.
FOLD_MARGIN = 0.05
#: Margin below which a step is called weak: it shrinks some direction to under half the ideal floor, so
#: inverting it magnifies an error there more than twice as much as the ideal denoiser would.
WEAK_MARGIN = 0.5
#: Latents with at most this many entries get full Jacobians (n forward-mode columns each) by default.
FULL_JACOBIAN_LIMIT = 256
#: Bidiagonalisation iterations (each one J v and one J^T u per latent) and relative residual, by default.
ITERATIONS = 200
TOL = 1e-2


@dataclass
class SmallestSingular:
    """Matrix-free smallest (and largest) singular values of a batch of Jacobians, one per latent."""

    values: list[float]  # estimate of the smallest singular value (an upper bound on it)
    largest: list[float]  # estimate of the largest (a lower bound on it)
    residuals: list[float]  # ||J^T u - s v|| of the smallest Ritz pair, relative to s
    converged: list[bool]
    iterations: list[int]  # iterations each latent took (to convergence, or all of them)
    products: int  # J v products plus J^T u products made, each over the whole batch


def _orthogonalise(w: torch.Tensor, basis: list[torch.Tensor]) -> torch.Tensor:
    """`w` [B, n] less its components along the earlier unit vectors, twice (full reorthogonalisation)."""
    if basis:
        stacked = torch.stack(basis, dim=1)  # [B, k, n]
        for _ in range(2):
            w = w - torch.einsum("bk,bkn->bn", torch.einsum("bkn,bn->bk", stacked, w), stacked)
    return w


def smallest_singular(jvp: Callable[[torch.Tensor], torch.Tensor], vjp: Callable[[torch.Tensor], torch.Tensor],
                      shape: Sequence[int], iterations: int = ITERATIONS, tol: float = TOL, seed: int = 0,
                      on_iteration: Callable[[int, SmallestSingular], None] | None = None) -> SmallestSingular:
    """The smallest singular value of each latent's Jacobian J from `jvp` (v -> J v) and `vjp` (u -> J^T u), both
    on tensors of `shape` [B, ...] whose latents do not interact (see the module docstring). Starts from a
    seeded Gaussian vector; stops when every latent has converged or after `iterations`; `on_iteration(k,
    estimate)` sees the estimate after each iteration k."""
    if iterations < 1 or not tol > 0:
        raise ValueError(f"the iterations must be at least 1 and the tolerance positive, got {iterations} and {tol}")
    batch, n = shape[0], math.prod(shape[1:])
    dtype = torch.float64
    steps = min(iterations, n)

    def apply(product: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return product(x.view(*shape).float()).reshape(batch, n).to(dtype)

    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(batch, n, generator=generator, dtype=dtype)
    v = v / v.norm(dim=1, keepdim=True)
    left: list[torch.Tensor] = []
    right: list[torch.Tensor] = [v]
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    values, largest, residuals = [math.nan] * batch, [math.nan] * batch, [math.inf] * batch
    converged, taken = [False] * batch, [steps] * batch
    u, products = apply(jvp, v), 1
    for k in range(steps):
        u = _orthogonalise(u, left)
        alpha = u.norm(dim=1).clamp_min(1e-300)
        left.append(u / alpha[:, None])
        alphas.append(alpha)
        w = apply(vjp, left[-1]) - alpha[:, None] * right[-1]
        products += 1
        w = _orthogonalise(w, right)
        beta = w.norm(dim=1)
        # B_k: upper bidiagonal, alphas on the diagonal, betas above it; J V_k = U_k B_k exactly and
        # J^T U_k = V_k B_k^T + beta_k v_{k+1} e_k^T, so the Ritz pair (s, V_k y, U_k z) has residual beta_k |z_k|.
        bidiagonal = torch.diag_embed(torch.stack(alphas, dim=1))
        if betas:
            bidiagonal = bidiagonal + torch.diag_embed(torch.stack(betas, dim=1), offset=1)
        lefts, singular, _ = torch.linalg.svd(bidiagonal)
        for i in range(batch):
            if converged[i]:
                continue
            smallest = float(singular[i, -1])
            values[i], largest[i] = smallest, float(singular[i, 0])
            residuals[i] = float(beta[i] * lefts[i, -1, -1].abs()) / max(smallest, 1e-300)
            if residuals[i] <= tol or k == n - 1:
                converged[i], taken[i] = True, k + 1
        if on_iteration is not None:
            on_iteration(k + 1, SmallestSingular(list(values), list(largest), list(residuals), list(converged),
                                                 [t if c else k + 1 for t, c in zip(taken, converged)], products))
        if all(converged) or k == steps - 1:
            break
        betas.append(beta)
        right.append(w / beta.clamp_min(1e-300)[:, None])
        u = apply(jvp, right[-1]) - beta[:, None] * left[-1]
        products += 1
    return SmallestSingular(values, largest, residuals, converged, taken, products)


def step_statistics(jacobian: torch.Tensor, floor: float) -> dict[str, float]:
    """Smallest singular value, negative-real-part eigenvalue count and asymmetry of one step's full Jacobian."""
    jacobian = jacobian.double()
    singular = torch.linalg.svdvals(jacobian)
    eigen = torch.linalg.eigvals(jacobian)
    symmetric, skew = jacobian + jacobian.T, jacobian - jacobian.T
    return {
        "floor": floor,
        "min_singular": float(singular.min()),
        "min_singular_over_floor": float(singular.min() / floor) if floor > 0 else None,
        "max_singular": float(singular.max()),
        "negative_eigenvalues": int((eigen.real < 0).sum()),
        "min_real_eigenvalue": float(eigen.real.min()),
        "asymmetry": float(skew.norm() / symmetric.norm()),
    }


@dataclass
class ProbeTrajectory:
    """Sampled trajectories (z_T first) with every step's data prediction, and each step's stepper records."""

    path: Trajectory
    schedule: Schedule
    records: dict

    def problem(self, denoiser: Denoiser, index: int) -> StepProblem:
        """Sampling step `index` as an equation in its start latent: the true next latent as target, the
        earlier steps' data predictions (or, for a sampler with its own stepper, their records) held fixed."""
        step = self.schedule.steps[index]
        if step.stepper is not None:
            memory = tuple(self.records[index - back] for back in range(1, len(step.history) + 1))
            return StepProblem(denoiser, step, target=self.path.latents[index + 1], memory=memory)
        history = tuple(step_history(step, self.path.data_predictions[:index]))
        return StepProblem(denoiser, step, target=self.path.latents[index + 1], history=history)


    @property
    def sampled(self) -> int:
        """How many of the schedule's steps were sampled (the ones that can be probed)."""
        return len(self.path.latents) - 1


@torch.no_grad()
def sample_trajectory(denoiser: Denoiser, schedule: Schedule, noise: torch.Tensor, until: int | None = None,
                      progress: bool = False) -> ProbeTrajectory:
    """Sample from `noise`, keeping every latent, data prediction and (for samplers with their own stepper that
    read earlier steps) the records the steps read; only the first `until` steps if given (enough to probe
    step `until - 1`)."""
    steps = schedule.steps if until is None else schedule.steps[:max(1, until)]
    path = sample(denoiser, dataclasses.replace(schedule, steps=steps), noise, keep_trajectory=True, progress=progress)
    needs = any(step.stepper is not None and step.history for step in steps)
    records = replay(denoiser, dataclasses.replace(schedule, steps=steps), path.latents) if needs else {}
    return ProbeTrajectory(path, schedule, records)


def chosen_steps(count: int, first: int = 0, last: int = 0, at: Sequence[int] = ()) -> list[int]:
    """The step indices to probe out of `count`: the first `first`, the last `last` and those in `at` (negative
    ones count from the end, -1 the last); all of them when nothing is chosen."""
    for name, value in (("first", first), ("last", last)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= count:
            raise ValueError(f"{name} {value} steps is out of range: the sampler has {count} steps")
    picked = set(range(first)) | set(range(count - last, count))
    for index in at:
        if not -count <= index < count:
            raise ValueError(f"step {index} is out of range: the sampler has {count} steps, 0 to {count - 1} "
                             f"(or -{count} to -1 from the end)")
        picked.add(index % count)
    return sorted(picked) or list(range(count))


def verdict(margin: float | None, negative_eigenvalues: int | None) -> str:
    """'fold', 'weak' or 'ok' (see the module docstring); '-' for a step to sigma 0 without eigenvalues."""
    if negative_eigenvalues:
        return "fold"
    if margin is None:
        return "-"
    return "fold" if margin < FOLD_MARGIN else "weak" if margin < WEAK_MARGIN else "ok"


def probe_steps(denoiser: Denoiser, trajectory: ProbeTrajectory, indices: Sequence[int], full: bool | None = None,
                iterations: int = ITERATIONS, tol: float = TOL, progress: bool = False,
                labels: Sequence[dict] | None = None,
                on_iteration: Callable[[int, int, SmallestSingular], None] | None = None) -> list[dict]:
    """One row per (probed step, latent): the step's floor, the matrix-free smallest singular value and margin
    (with its residual, iterations and whether it converged), with full Jacobians (`full`; None: when a latent
    has at most `FULL_JACOBIAN_LIMIT` entries) also their smallest singular value, negative-real-part
    eigenvalue count and asymmetry, and the verdict; the step's network calls and seconds are per step, for
    the whole batch. `labels[i]` (prompt, seed) is copied into latent i's rows; `on_iteration(step, k,
    estimate)` sees every iteration."""
    schedule = trajectory.schedule
    count = len(schedule.steps)
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise ValueError(f"step {bad[0]} is out of range: the sampler has {count} steps, 0 to {count - 1}")
    if max(indices, default=0) >= trajectory.sampled:
        raise ValueError(f"step {max(indices)} was not sampled: the trajectory holds the first {trajectory.sampled} steps")
    start = trajectory.path.latents[0]
    batch, entries = start.shape[0], start[0].numel()
    full = entries <= FULL_JACOBIAN_LIMIT if full is None else full
    rows: list[dict] = []
    bar = tqdm(total=len(indices) * iterations, desc="probing steps", disable=not progress, leave=False)
    for position, index in enumerate(indices):
        step = schedule.steps[index]
        floor = step.end.sigma / step.start.sigma
        problem = trajectory.problem(denoiser, index)
        latent = trajectory.path.latents[index]
        before = denoiser.nfe
        bar.set_postfix_str(f"step {index} (t={step.timestep:g})")

        def tick(k: int, estimate: SmallestSingular | None, done: int = position, index: int = index) -> None:
            bar.n = done * iterations + k
            bar.refresh()
            if on_iteration is not None and estimate is not None:
                on_iteration(index, k, estimate)

        with measure(latent.device) as cost:
            jvp, vjp = problem.linearize(latent)
            found = smallest_singular(jvp, vjp, tuple(latent.shape), iterations, tol, on_iteration=tick)
        stats = [None] * batch
        dense_cost = None
        if full:
            with measure(latent.device) as dense_cost:
                jacobians = problem.jacobian(latent)
            stats = [step_statistics(jacobian, floor) for jacobian in jacobians]
        nfe = denoiser.nfe - before
        for i in range(batch):
            value = found.values[i]
            margin = value / floor if floor > 0 else None
            row = {**(labels[i] if labels else {}), "step": index, "timestep": step.timestep,
                   "sigma_from": step.start.sigma, "sigma_to": step.end.sigma, "floor": floor,
                   "min_singular": value, "margin": margin, "max_singular": found.largest[i],
                   "residual": found.residuals[i], "iterations": found.iterations[i], "converged": found.converged[i],
                   "products": found.products, "seconds": cost.seconds, "peak_memory_bytes": cost.peak_memory_bytes}
            negative = None
            if stats[i] is not None:
                negative = stats[i]["negative_eigenvalues"]
                row.update({"full_min_singular": stats[i]["min_singular"], "negative_eigenvalues": negative,
                            "min_real_eigenvalue": stats[i]["min_real_eigenvalue"], "asymmetry": stats[i]["asymmetry"],
                            "relative_difference": value / stats[i]["min_singular"] - 1.0,
                            "full_seconds": dense_cost.seconds})
            row["nfe"] = nfe
            row["verdict"] = verdict(margin, negative)
            if not found.converged[i] and row["verdict"] != "fold":
                row["verdict"] += "?"  # an upper bound above the threshold says nothing for certain
            rows.append(row)
        tick(iterations, None)
    bar.close()
    return rows
