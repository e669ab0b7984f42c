"""What a decoder inversion returns: the recovered latent, its residuals and cost, and the flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from diffinv.utils.status import Status


@dataclass
class StepCondition:
    """The convergence condition of a forward-step or inertial KM run, checked against what was observed."""

    rule: str
    step_size: float  # rho, or 2 lambda beta
    lambda_max: float  # sup of lambda for the inertia used (1 for the forward step)
    beta_assumed: float | None  # the beta given to inertial-km (None for forward-step)
    beta_observed: float | None  # smallest <dT, dz>/||dT||^2 seen between consecutive evaluated points
    bound: float | None  # largest step the observed beta allows
    holds: bool | None  # None when nothing could be observed

    def summary(self) -> str:
        verdict = {True: "holds", False: "does NOT hold", None: "could not be checked"}[self.holds]
        observed = "n/a" if self.beta_observed is None else f"{self.beta_observed:.4g}"
        return f"{self.rule}: step {self.step_size:g}, observed beta {observed}: condition {verdict}"


@dataclass
class DecoderInversion:
    """Recovered latent z_0 and what finding it cost.

    `residuals[k]` is the RMS of D(z) - x at the k-th point where the method evaluated D, followed by
    the RMS at the returned latent (a full run has iterations + 1 entries); `latent_residuals` likewise
    for T(z) = E(D(z)) - E(x) (for "gradient" only the final entry is measured). `converged` is False
    exactly when the run diverged (see the module docstring; `reason` says how). `condition` (forward-step
    and inertial-km) is the theory's step-size condition checked against `cocoercivity_min`, the smallest
    <T(y') - T(y), y' - y> / ||T(y') - T(y)||^2 between consecutive evaluated points (gradient-free rules).
    """

    latent: torch.Tensor
    method: str
    iterations: int = 0
    seconds: float = 0.0
    peak_memory_bytes: int | None = None
    residuals: list[float] = field(default_factory=list)
    converged: bool = True
    latent_residuals: list[float] = field(default_factory=list)
    diverged: bool = False
    reason: str | None = None
    dtype: str = ""
    frames: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    #: the method's whole configuration (`DecoderMethod.as_dict()`): the stage can be repeated from it
    method_config: dict[str, Any] = field(default_factory=dict)
    condition: StepCondition | None = None
    cocoercivity_min: float | None = None
    clipped_fraction: float = 0.0  # share of the input's values (each channel of each pixel) at -1 or 1

    @property
    def status(self) -> Status:
        """How the stage ended, in the vocabulary every stage shares."""
        if self.diverged:
            return Status.DIVERGED
        return Status.CONVERGED if self.converged else Status.ITERATION_LIMIT


class DecoderInversionDiverged(RuntimeError):
    """A decoder inversion blew up; `.result` holds the flagged `DecoderInversion`."""

    def __init__(self, message: str, result: DecoderInversion):
        super().__init__(message)
        self.result = result
