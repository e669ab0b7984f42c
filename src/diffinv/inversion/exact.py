"""Exact inversion of DPM-Solvers (Hong, Lee, Jeon, Bae, Chun, CVPR 2024), and fixed-point inversion.

Sampling step k maps the noisier latent x_s to x_t = Phi(x_s), Phi being `update.update` with the
(guided) network evaluated at x_s. Inverting the step means solving Phi(x_s) = x_t for x_s, which
naive inversion only approximates (it evaluates the network at x_t). Here each inverse step is
warm-started from the naive estimate and solved iteratively with the loop of
`diffinv.inversion.iteration`:

- ``iteration="forward-step"`` (the paper's default): x_s <- x_s - rho (Phi(x_s) - x_t), rho warming up
  over 20 iterations and halved when the residual plateaus; robust to large guidance because a
  rho below 1 damps what plain fixed-point iteration amplifies;
- ``iteration="gradient"``: gradient descent on ||Phi(x_s) - x_t||^2 / 2 (autograd through the UNet);
- method ``"fixed-point"`` (Pan et al.): the forward step with rho = 1 / (coefficient of x_s in Phi),
  which is exactly x_s <- naive step evaluated at x_s; it diverges when guidance makes the network's
  Jacobian large.

For DPM-Solver++ 2M/3M the step also uses the data predictions of the earlier (noisier) sampling steps,
which are not known yet when inverting. As in the paper, they are estimated by a fine-grained naive
inversion from the current x_t through the step's own interval and the earlier ones (`fine_steps`
sub-steps each), and the whole higher-order correction (the multistep terms evaluated at those
estimates) is held fixed while the first-order (backward Euler) part is solved. First-order steps at
the ends of the schedule are solved as first-order steps, as the sampler takes them.

A sampler with its own stepper (PNDM, UniPC, Heun, DEIS) is solved the same way on its own step: Phi is
the stepper's step from x_s with every network call it makes (Heun's second call, PNDM's first-step pair,
UniPC's corrector). What the step reads of the earlier (noisier) steps is held fixed at estimates, as for
DPM-Solver++: the network's calls at fine-naive estimates of the earlier latents (walked from x_t, `fine_steps`
sub-steps per interval); a further sweep replays the sampler over the latents the last sweep solved (each
step from its latent, the records chaining as in sampling), and the sweeps stop as for DPM-Solver++ (below).
Steps that read nothing (Heun's) are solved in one pass.

Beyond the paper: Anderson acceleration (`anderson=m`), a per-step tolerance relative to the latent's
norm (`tol`; the paper stops on an absolute threshold, sum of squares < 1e-3 on SD's 4x64x64 latents,
i.e. about 2.5e-4 relative), and a plateau stop (`stall=n`: give up a step once its residual has not
fallen by 1% in n iterations). The options and their defaults are the `Exact` and `FixedPoint`
configurations' (`diffinv.inversion.methods`); the paper's settings are the `exact-paper` preset.
Every step's final relative residual ||Phi(x_s) - x_t|| / ||x_t|| goes to the result; a step that
misses its tolerance marks the result `converged=False`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from diffinv.inversion.driver import Regeneration, StepOutcome, run_inversion
from diffinv.inversion.iteration import Iteration, StepSize, solve_iteratively
from diffinv.inversion.levenberg import dense, levenberg_marquardt, matrix_free
from diffinv.inversion.naive import explicit_step, inverse_step
from diffinv.inversion.step_problem import StepProblem, level_at
from diffinv.inversion.sweeps import combine_sweeps, regeneration_errors, replay
from diffinv.models.denoiser import Denoiser
from diffinv.models.prediction import NoiseLevel, Prediction
from diffinv.sampler.schedule import Schedule, Step
from diffinv.sampler.update import Record, evaluate, update

#: Relative per-step tolerance that matches the paper's absolute threshold on SD latents (see module doc).
PAPER_TOL = 2.5e-4

class ImplicitInversion:
    """`InverseStep` that solves each inverse step's implicit equation (see the module docstring).

    Needs `prepare` (the driver calls it) to know the sampling schedule. `log` holds, per inverse step,
    the order, evaluations, network calls, final residual and why the iteration stopped.
    """

    def __init__(
        self, iteration: str = "forward-step", fixed_point: bool = False, fine_steps: int = 10, sweeps: int | None = 1,
        refine: str | None = None, refine_iter: int = 10, refine_inner: int = 50, regeneration_tol: float | None = 1e-2,
        warm_start: str = "naive", multistep_terms: str = "fine-naive", **loop: Any
    ) -> None:
        """`loop` holds the keyword arguments of `iteration.solve_iteratively` (max_iter, tol, step_size, anderson,
        average, stall); with `fixed_point` the step size is replaced by 1 / (coefficient of x_s).
        `refine="lm"` hands a step that missed its tolerance to Levenberg-Marquardt (`levenberg.py`),
        matrix-free; `refine="lm-dense"` to Levenberg-Marquardt on full Jacobians. On a multistep sampler a
        noise that regenerates z_0 only to a relative error above `regeneration_tol` is reported unconverged."""
        self.regeneration_tol = None if regeneration_tol is None else float(regeneration_tol)
        self.iteration = iteration
        self.refine, self.refine_iter, self.refine_inner = refine, int(refine_iter), int(refine_inner)
        self.fixed_point = fixed_point
        self.warm_start = warm_start
        self.multistep_terms = multistep_terms
        self.loop = loop
        self.fine_steps = int(fine_steps)
        self.sweeps = sweeps
        self.schedule: Schedule | None = None
        self.log: list[dict[str, Any]] = []
        #: sampling step index -> (solved latent at its start, data prediction there), filled as steps are solved.
        self.solved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.previous: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None
        self.sweep: int | None = None  # the sweep `prepare` is running, if any
        self.reset()

    def reset(self) -> None:
        """Forget any earlier run (`prepare` starts each run with it)."""
        self.log, self.solved, self.previous = [], {}, None
        #: the best sweep's step outcomes, replayed by the driver's pass (None: steps are solved in that pass).
        self.replay: list[StepOutcome] | None = None
        self.outcomes: list[StepOutcome] = []
        #: per sweep, each latent's relative error of regenerating z_0 from that sweep's noise.
        self.regeneration: list[torch.Tensor] = []
        self.records: dict[int, Record] = {}
        self.estimates: list[torch.Tensor] | None = None
        #: (noise level, noise prediction, data prediction) at the latents solved so far in this pass, most recent first.
        self.trail: list[tuple[NoiseLevel, torch.Tensor, torch.Tensor]] = []

    def prepare(self, denoiser: Denoiser, schedule: Schedule, latent: torch.Tensor) -> None:
        """Remember the sampling schedule; with `sweeps` > 1 and a multistep sampler, run the sweeps (whole
        inversions, each taking its multistep terms from the one before) and keep the best for the driver.

        A sweep is judged by what exact inversion is for: how well its noise regenerates z_0 through the
        sampler (one sampling pass, `steps` network calls). The sweeps stop at the first one that regenerates
        z_0 no better than the best so far, and the driver's pass replays the best: on a sampler whose
        multistep chain amplifies errors, later sweeps can converge step by step to a noise farther from z_0's
        preimage than the first one's."""
        self.schedule = schedule
        self.reset()
        stepper_memory = any(step.stepper is not None and step.history for step in schedule.steps)
        count = self.sweeps if self.sweeps is not None else (3 if stepper_memory else 1)
        if count <= 1 or all(not step.history for step in schedule.steps):
            return
        sweeps: list[list[StepOutcome]] = []
        for sweep in range(1, count + 1):
            self.sweep, self.solved, self.outcomes, self.trail = sweep, {}, [], []
            if self.estimates is not None:
                self.records = replay(denoiser, schedule, self.estimates)
            noise = run_inversion(denoiser, schedule, latent, self.solve_step, f"exact (sweep {sweep})").noise
            error = regeneration_errors(denoiser, schedule, latent, noise)
            improved = bool((error < torch.stack(self.regeneration).amin(0)).any()) if self.regeneration else True
            self.regeneration.append(error.double().cpu())
            sweeps.append(self.outcomes)
            if not improved:
                break
            self.previous = self.solved
            if stepper_memory:  # the next sweep replays the sampler over the latents this one solved
                self.estimates = [self.solved[step.index][0] for step in schedule.steps] + [latent]
        self.sweep = None
        self.replay = combine_sweeps(sweeps, torch.stack(self.regeneration).argmin(0))

    def check(self, denoiser: Denoiser, schedule: Schedule, latent: torch.Tensor, noise: torch.Tensor) -> Regeneration | None:
        """On a multistep sampler, how well `noise` regenerates z_0 (from the sweeps when they ran, else one
        sampling pass), allowed `regeneration_tol`: the step equations hold estimated multistep terms, so every
        step meeting `tol` does not make the noise a preimage (on the bundled model, DPM-Solver++(2M)-10 at
        guidance 3, two such runs regenerated z_0 only to 2.2-2.4% and sat 2e-2 NMSE from the true noise; at
        guidance 1 runs within 1e-6 NMSE of it regenerate z_0 to 0.13-0.22%)."""
        if self.regeneration_tol is None or all(not step.history for step in schedule.steps):
            return None
        if self.regeneration:
            errors = torch.stack(self.regeneration).amin(0)  # the replayed sweep is each latent's best
        else:
            errors = regeneration_errors(denoiser, schedule, latent, noise)
        return Regeneration(error=float(errors.max()), allowed=self.regeneration_tol)

    def __call__(
        self, denoiser: Denoiser, x: torch.Tensor, step: Step, history: list[tuple[NoiseLevel, torch.Tensor]], position: int
    ) -> StepOutcome:
        """The driver's pass: the best sweep's step when `prepare` ran sweeps, else the step solved now."""
        if self.replay is not None:
            return self.replay[position]
        return self.solve_step(denoiser, x, step, history, position)

    def solve_step(
        self, denoiser: Denoiser, x: torch.Tensor, step: Step, history: list[tuple[NoiseLevel, torch.Tensor]], position: int
    ) -> StepOutcome:
        """Solve one inverse step; in a later sweep with the previous sweep's latents and data predictions."""
        if self.schedule is None:
            raise RuntimeError("call prepare(denoiser, schedule, latent) first (run_inversion does)")
        nfe_before = denoiser.nfe
        forward = self.schedule.steps[step.index]
        if forward.stepper is not None:
            return self.solve_stepper_step(denoiser, x, step, history, position, forward)
        if self.previous is None:
            terms_extrapolated = forward.order > 1 and self.multistep_terms == "extrapolate" and bool(self.trail)
            if terms_extrapolated:  # the earlier steps' data predictions from the steps solved so far (no call)
                earlier = tuple((point, self.extrapolated(2, point)) for point in forward.history)
                problem = StepProblem(denoiser, forward, x, history=earlier)
            else:
                correction = self.correction(denoiser, x, forward) if forward.order > 1 else None
                problem = StepProblem(denoiser, forward, x, correction)
            start = self.extrapolated_start(problem) if self.warm_start != "naive" else None
            kept = None
            if start is None:
                start, warm = explicit_step(denoiser, x, step, history)
                kept = None if terms_extrapolated else warm.data
        else:
            # A later sweep: warm start and earlier steps' data predictions from the previous sweep.
            start = self.previous[forward.index][0]
            earlier = tuple((point, self.previous[forward.index - back][1]) for back, point in enumerate(forward.history, start=1))
            problem, kept = StepProblem(denoiser, forward, x, history=earlier), None
        result = self.solve(problem, start)
        self.solved[forward.index] = (result.latent, result.extra)
        if forward.start.sigma > 0 and isinstance(result.extra, torch.Tensor):
            noise = (result.latent - forward.start.alpha * result.extra) / forward.start.sigma
            self.trail = [(forward.start, noise, result.extra)] + self.trail[:1]
        self.log.append({
            "sweep": self.sweep or 1, "position": position, "timestep": forward.timestep, "order": forward.order,
            "evaluations": result.evaluations, "nfe": denoiser.nfe - nfe_before, "residual": result.residual,
            "stop": result.stop, "converged": result.converged, "estimated": result.estimated,
        })
        outcome = StepOutcome(
            latent=result.latent, data_prediction=result.extra if kept is None else kept, residual=result.residual,
            converged=result.converged,
        )
        self.outcomes.append(outcome)
        return outcome

    def solve_stepper_step(
        self, denoiser: Denoiser, x: torch.Tensor, step: Step, history: list, position: int, forward: Step
    ) -> StepOutcome:
        """Solve one step of a sampler with its own stepper, its reads of earlier steps held fixed: records at
        fine-naive estimates of the earlier latents (a later sweep: replayed over the previous sweep's latents);
        warm start: the naive inverse step from x (a later sweep: the previous sweep's latent)."""
        nfe_before = denoiser.nfe
        if self.previous is None:
            start, _, _ = inverse_step(denoiser, x, step, history)
            memory = self.estimated_records(denoiser, x, forward)
        else:
            start = self.previous[forward.index][0]
            memory = tuple(self.records[forward.index - back] for back in range(1, len(forward.history) + 1))
        result = self.solve(StepProblem(denoiser, forward, x, memory=memory), start)
        record: Record = result.extra
        self.solved[forward.index] = (result.latent, record.data)
        self.log.append({
            "sweep": self.sweep or 1, "position": position, "timestep": forward.timestep, "order": forward.order,
            "evaluations": result.evaluations, "nfe": denoiser.nfe - nfe_before, "residual": result.residual,
            "stop": result.stop, "converged": result.converged, "estimated": result.estimated,
        })
        outcome = StepOutcome(latent=result.latent, data_prediction=record.data, residual=result.residual,
                              converged=result.converged, record=record)
        self.outcomes.append(outcome)
        return outcome

    def extrapolated_start(self, problem: StepProblem) -> torch.Tensor | None:
        """A warm start at no network call: the step's equation solved with the noise prediction guessed from
        the steps solved before it (`warm_start="previous"`: the last one's; `"extrapolate"`: linear in log-SNR
        through the last two). None where there is nothing to extrapolate from, or alpha is 0 at the start."""
        start = problem.forward.start
        if not self.trail or start.alpha == 0.0 or problem.forward.stepper is not None:
            return None
        guess = self.extrapolated(1, start) if self.warm_start == "extrapolate" else self.trail[0][1]

        def image(z: torch.Tensor) -> torch.Tensor:
            prediction = Prediction((z - start.sigma * guess) / start.alpha, guess)
            out = update(prediction, start, problem.forward.end, problem.history)
            return out if problem.correction is None else out + problem.correction

        offset = image(torch.zeros_like(problem.target))
        return (problem.target - offset) / (image(torch.ones_like(offset)) - offset)

    def extrapolated(self, which: int, level: NoiseLevel) -> torch.Tensor:
        """The noise (`which` 1) or data (2) prediction at `level`, linear in log-SNR through the last two solved
        steps' (the last one's alone when there is one, or the levels do not allow it)."""
        (near, *values) = self.trail[0]
        value = values[which - 1]
        if len(self.trail) > 1:
            far, *others = self.trail[1]
            span = near.log_snr - far.log_snr
            if math.isfinite(span) and math.isfinite(level.log_snr) and span != 0.0:
                value = value + (level.log_snr - near.log_snr) / span * (value - others[which - 1])
        return value

    def estimated_records(self, denoiser: Denoiser, x: torch.Tensor, forward: Step) -> tuple[Record, ...]:
        """The records `forward` reads of the earlier steps, at fine-naive estimates of their latents: from x_t,
        `fine_steps` first-order sub-steps per interval through the step's own interval and the earlier ones (as
        `correction` does), one network call at each estimate (a record is the call at the step's start)."""
        assert self.schedule is not None
        steps = self.schedule.steps
        if not forward.history:
            return ()
        later = forward.index + 1
        levels = [(forward.end, steps[later].timestep if later < len(steps) else None), (forward.start, forward.timestep)]
        earlier = [steps[forward.index - back] for back in range(1, len(forward.history) + 1)]
        levels += [(step.start, step.timestep) for step in earlier]
        y, records = x, []
        for position, ((low, low_timestep), (high, high_timestep)) in enumerate(zip(levels, levels[1:])):
            y = self.fine_naive(denoiser, y, low, low_timestep, high, high_timestep)
            if position:
                record = evaluate(denoiser, y, high_timestep, high)
                record.order = earlier[position - 1].order
                records.append(record)
        return tuple(records)

    def solve(self, problem: StepProblem, start: torch.Tensor) -> Iteration:
        """Run the configured iteration on one step's equation from the warm start."""
        loop = dict(self.loop)
        if self.fixed_point:
            loop["step_size"] = StepSize.constant(1.0 / problem.linear_coefficient())
        evaluate = problem.gradient if self.iteration == "gradient" else problem.forward_step
        result = solve_iteratively(evaluate, start, **loop)
        if result.converged or self.refine is None:
            return result
        return self.refined(problem, result, start)

    def refined(self, problem: StepProblem, first: Iteration, start: torch.Tensor) -> Iteration:
        """Levenberg-Marquardt from the step's warm start; keeps whichever of its result and the first
        iteration's best iterate has the lower residual.

        Not from the first iteration's iterate: on a folded step the forward step drifts along the directions
        with negative eigenvalues, lowering the residual while leaving the basin of the true solution (on
        the first bundled model, DDIM-50 at 7.5, dense LM reached 3.3e-6 from the naive start and stalled at 1.4e-4
        from the forward step's best iterate)."""
        solver = dense(problem.jacobian) if self.refine == "lm-dense" else matrix_free(problem.linearize, self.refine_inner)
        lm = levenberg_marquardt(problem.residual, solver, start, problem.relative, self.loop.get("tol"),
                                 max_iter=self.refine_iter)
        if lm.residual >= first.residual:
            return first
        final = problem.forward_step(lm.latent)  # the data prediction at the returned latent
        return Iteration(
            latent=lm.latent, residual=lm.residual, converged=lm.converged, stop=f"lm {lm.stop}",
            evaluations=first.evaluations + len(lm.residuals), residuals=first.residuals + lm.residuals[1:],
            extra=final.extra,
        )

    def correction(self, denoiser: Denoiser, x: torch.Tensor, forward: Step) -> torch.Tensor:
        """The multistep terms of `forward` at fine-naive estimates of its latent and the earlier ones.

        From x_t, a naive inversion with `fine_steps` first-order sub-steps per interval (uniform in
        log-SNR, the timestep interpolated alike) walks to the step's start and the earlier steps' starts;
        the data predictions there give the correction update(order k) - update(order 1).
        """
        assert self.schedule is not None
        steps = self.schedule.steps
        later = forward.index + 1
        levels = [(forward.end, steps[later].timestep if later < len(steps) else None), (forward.start, forward.timestep)]
        levels += [(point, steps[forward.index - back].timestep) for back, point in enumerate(forward.history, start=1)]
        y, estimates = x, []
        for (low, low_timestep), (high, high_timestep) in zip(levels, levels[1:]):
            y = self.fine_naive(denoiser, y, low, low_timestep, high, high_timestep)
            estimates.append(denoiser.predict(y, high_timestep, high))
        first = estimates[0]
        history = [(point, estimate.data) for point, estimate in zip(forward.history, estimates[1:])]
        return update(first, forward.start, forward.end, history) - update(first, forward.start, forward.end)

    def fine_naive(
        self, denoiser: Denoiser, y: torch.Tensor, low: NoiseLevel, low_timestep: int | None, high: NoiseLevel, high_timestep: int
    ) -> torch.Tensor:
        """Naive first-order inversion of y from level `low` to `high` in `fine_steps` sub-steps (one if
        `low` has no timestep, i.e. it is the clean end of the schedule)."""
        count = self.fine_steps if low_timestep is not None else 1
        previous = low
        for j in range(1, count + 1):
            if j == count:
                point, timestep = high, float(high_timestep)
            else:
                fraction = j / count
                point = level_at(low.log_snr + fraction * (high.log_snr - low.log_snr))
                timestep = low_timestep + fraction * (high_timestep - low_timestep)
            y, _ = explicit_step(denoiser, y, Step(-1, timestep, previous, point, 1), [])
            previous = point
        return y
