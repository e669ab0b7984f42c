"""The loop every sampler-inversion method shares: z_0 -> z_T over the reversed schedule.

A method supplies only how one inverse step is solved (`InverseStep`); the driver keeps the multistep
history, the trajectory, per-step residuals, NFE, time and peak memory, and stops with an error that
names the step when a latent turns NaN or blows up, so a broken run is never saved as a success.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from diffinv.inversion.result import InversionResult
from diffinv.models.denoiser import Denoiser
from diffinv.models.prediction import NoiseLevel
from diffinv.sampler.schedule import Schedule, Step, reverse
from diffinv.sampler.update import usable_history, usable_records
from diffinv.utils.measure import measure
from diffinv.utils.status import OnDivergence, Status, check_on_divergence

#: A latent whose RMS exceeds this is taken as blown up (z_T is unit Gaussian, z_0 is O(1)).
BLOW_UP_RMS = 1e3


class InversionDiverged(RuntimeError):
    """An inversion produced NaN or exploding latents; the message names the step."""


@dataclass
class StepOutcome:
    """What solving one inverse step gave: the noisier latent, the x0 to keep as history, the residual, and
    for a sampler with its own stepper the step's record (the history of the next inverse step)."""

    latent: torch.Tensor
    data_prediction: torch.Tensor
    residual: float | None = None
    converged: bool = True
    record: Any = None


#: (denoiser, latent at the step's start, the inverse step, usable (level, x0) history -- the earlier inverse steps'
#: records for a sampler with its own stepper --, index in inversion order) -> outcome.
#: An inverse step that needs a pass over the whole run first (e.g. to estimate neighbouring steps' predictions)
#: may also have a `prepare(denoiser, schedule, latent)` method; the driver calls it inside the measured
#: block, so its network calls, time and memory count. One whose steps do not solve the sampler's own equations
#: exactly may have a `check(denoiser, schedule, latent, noise) -> Regeneration | None`, run after the last step
#: (also measured): a failed check marks the result unconverged, with a note. An inverse step's `log`, a list of one
#: dict per solved step, goes to the result's `step_log`.
InverseStep = Callable[[Denoiser, torch.Tensor, Step, list[tuple[NoiseLevel, torch.Tensor]], int], StepOutcome]


@dataclass
class Regeneration:
    """How well the recovered noise regenerates z_0 through the sampler: the largest relative error over the
    batch, and the error the method's tolerance allows."""

    error: float
    allowed: float

    @property
    def ok(self) -> bool:
        return self.error <= self.allowed


def check_finite(latent: torch.Tensor, step: Step, position: int, total: int) -> None:
    """Raise InversionDiverged if `latent` is NaN/inf or its RMS passed BLOW_UP_RMS."""
    where = f"inverse step {position + 1}/{total} (timestep {step.timestep})"
    if not torch.isfinite(latent).all():
        raise InversionDiverged(f"inversion produced NaN or infinite values at {where}")
    rms = float(latent.float().pow(2).mean().sqrt())
    if rms > BLOW_UP_RMS:
        raise InversionDiverged(f"inversion blew up at {where}: latent RMS {rms:.3g}")


@torch.inference_mode()
def run_inversion(
    denoiser: Denoiser,
    schedule: Schedule,
    latent: torch.Tensor,
    solve_step: InverseStep,
    method: str,
    keep_trajectory: bool = False,
    progress: bool = False,
    on_divergence: OnDivergence = "raise",
) -> InversionResult:
    """Invert the sampler from z_0 = `latent` with `solve_step` for each step; returns z_T and the cost.

    A NaN or blown-up latent raises `InversionDiverged` naming the step, or with `on_divergence="report"` ends
    the run with a warning and a result whose status is DIVERGED and whose noise is NaN."""
    check_on_divergence(on_divergence)
    steps = reverse(schedule)
    nfe_before = denoiser.nfe
    x = latent.float()
    trajectory = [x]
    data_predictions: list[torch.Tensor] = []  # most recent first
    records: list = []  # the same, as records, for samplers with their own stepper
    residuals: list[float] = []
    converged = True
    diverged: str | None = None
    with measure(latent.device) as cost:
        try:
            prepare = getattr(solve_step, "prepare", None)
            if prepare is not None:
                prepare(denoiser, schedule, x)
            for position, step in enumerate(tqdm(steps, desc=f"inverting ({method})", disable=not progress, leave=False)):
                if step.stepper is not None:
                    history = usable_records(step.start, records)
                else:
                    history = usable_history(step.start, list(zip(step.history, data_predictions)), step.order)
                outcome = solve_step(denoiser, x, step, history, position)
                check_finite(outcome.latent, step, position, len(steps))
                x = outcome.latent
                data_predictions.insert(0, outcome.data_prediction)
                del data_predictions[2:]
                if outcome.record is not None:
                    records.insert(0, outcome.record)
                    del records[3:]
                if outcome.residual is not None:
                    residuals.append(outcome.residual)
                converged = converged and outcome.converged
                if keep_trajectory:
                    trajectory.append(x)
        except InversionDiverged as error:
            if on_divergence == "raise":
                raise
            diverged, x = str(error), torch.full_like(latent.float(), float("nan"))
        noise = x / schedule.init_noise_sigma
        check = getattr(solve_step, "check", None)
        regeneration = check(denoiser, schedule, latent.float(), noise) if check is not None and diverged is None else None
    notes = [] if converged else ["some steps did not reach their tolerance; see step_residuals"]
    log = list(getattr(solve_step, "log", []))
    status = Status.CONVERGED
    if not converged:
        status = Status.worst(*(Status.of_stop(entry.get("stop")) for entry in log if not entry.get("converged", True)))
        status = Status.ITERATION_LIMIT if status is Status.CONVERGED else status
    if diverged is not None:
        converged, status = False, Status.DIVERGED
        notes.append(diverged)
        warnings.warn(diverged, RuntimeWarning, stacklevel=2)
    if regeneration is not None and not regeneration.ok:
        converged = False
        status = Status.worst(status, Status.NOT_A_PREIMAGE)
        notes.append(f"the noise regenerates z_0 only to relative error {regeneration.error:.2g} (allowed {regeneration.allowed:.2g}): "
                     "the multistep terms were estimated, so every step meeting its tolerance does not make it a preimage")
    return InversionResult(
        noise=noise,
        latent=latent,
        method=method,
        sampler=schedule.name,
        steps=len(schedule),
        guidance=denoiser.guidance,
        nfe=denoiser.nfe - nfe_before,
        seconds=cost.seconds,
        peak_memory_bytes=cost.peak_memory_bytes,
        residuals=residuals,
        converged=converged,
        notes=notes,
        trajectory=trajectory if keep_trajectory else [],
        regeneration_error=None if regeneration is None else regeneration.error,
        step_log=log,
        status=status,
    )
