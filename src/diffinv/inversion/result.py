"""One result type for every inversion method."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from diffinv.utils.status import Status


@dataclass
class InversionResult:
    """Recovered noise z_T and latent z_0 with what recovering them cost and how close each step got.

    `residuals[k]` is the relative residual ||Phi_k(x_k) - x_{k+1}|| / ||x_{k+1}|| of inverse step k (in
    inversion order, z_0 side first) where the method measures it; `nfe` counts network calls (a
    guided call counts once); `seconds` and `peak_memory_bytes` cover the whole inversion, the
    decoder stage is also reported on its own.
    """

    noise: torch.Tensor
    latent: torch.Tensor
    method: str
    sampler: str
    steps: int
    guidance: float
    nfe: int = 0
    seconds: float = 0.0
    peak_memory_bytes: int | None = None
    residuals: list[float] = field(default_factory=list)
    converged: bool = True
    notes: list[str] = field(default_factory=list)
    trajectory: list[torch.Tensor] = field(default_factory=list)
    decoder: str | None = None
    decoder_seconds: float | None = None
    decoder_peak_memory_bytes: int | None = None
    decoder_iterations: int | None = None
    #: share of the input image's values at -1 or 1 (clipped when it was saved), from the decoder stage
    clipped_fraction: float | None = None
    prompts: list[str] | None = None  # the prompt of each latent, where the caller knew them (diffinv.invert)
    metrics: dict[str, float] = field(default_factory=dict)
    #: largest relative error ||S(noise) - z_0|| / ||z_0|| of regenerating z_0 through the sampler S, where the
    #: method checked it (exact inversion of multistep samplers, whose step equations use estimated terms).
    regeneration_error: float | None = None
    #: the method's whole configuration (`Method.as_dict()`): the run can be repeated from it
    method_config: dict[str, Any] = field(default_factory=dict)
    #: per inverse step, what the method logged (exact and fixed-point: order, evaluations, network calls,
    #: residual, why the iteration stopped)
    step_log: list[dict[str, Any]] = field(default_factory=list)
    #: how the run ended, in the vocabulary every stage shares (`diffinv.utils.status.Status`)
    status: Status = Status.CONVERGED
    #: per latent, which inversion's noise was returned ("naive" where an unconverged method's regenerated z_0
    #: less closely than naive inversion's; see `keep_better`); empty when no choice was made
    returned: list[str] = field(default_factory=list)
    #: the decoder stage's own result, when the run started from an image (`diffinv.invert`)
    decoder_result: Any = None

    @property
    def report(self) -> dict[str, Any]:
        """A flat JSON-ready summary: settings, cost, convergence and any measured metrics."""
        report: dict[str, Any] = {
            "method": self.method,
            "sampler": self.sampler,
            "steps": self.steps,
            "guidance": self.guidance,
            "nfe": self.nfe,
            "seconds": round(self.seconds, 4),
            "peak_memory_bytes": self.peak_memory_bytes,
            "converged": self.converged,
            "status": str(self.status),
        }
        if self.method_config:
            report["method_config"] = self.method_config
        if self.returned:
            report["returned"] = self.returned
        if self.residuals:
            report["max_step_residual"] = max(self.residuals)
            report["step_residuals"] = self.residuals
        if self.regeneration_error is not None:
            report["regeneration_error"] = self.regeneration_error
        if self.decoder is not None:
            stage = self.decoder_result
            report.update(
                decoder=self.decoder,
                decoder_config=stage.method_config if stage is not None else None,
                decoder_status=str(stage.status) if stage is not None else None,
                decoder_seconds=round(self.decoder_seconds or 0.0, 4),
                decoder_peak_memory_bytes=self.decoder_peak_memory_bytes,
                decoder_iterations=self.decoder_iterations,
                clipped_fraction=self.clipped_fraction,
            )
        report.update(self.metrics)
        if self.notes:
            report["notes"] = self.notes
        return report
