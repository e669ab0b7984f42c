"""One status vocabulary for every stage of a run (decoder inversion, sampler inversion) and the run itself."""

from __future__ import annotations

from enum import Enum
from typing import Literal

#: What a stage does when it diverges: raise its error (carrying the flagged result), or return the result with
#: status DIVERGED and a warning. One switch for every stage (`diffinv.invert(on_divergence=...)`).
OnDivergence = Literal["raise", "report"]


def check_on_divergence(value: str) -> str:
    """`value` if it is a divergence policy, else a one-line ValueError."""
    if value not in ("raise", "report"):
        raise ValueError(f"on_divergence must be raise or report, got {value!r}")
    return value


class Status(str, Enum):
    """How a stage ended. Worst last: a run's status is the worst of its stages'."""

    CONVERGED = "converged"  # every step (or iterate) met its tolerance
    ITERATION_LIMIT = "iteration limit"  # the iterations ran out before the tolerance
    PLATEAU = "plateau"  # the residual stopped falling (float32 round-off, or a fold) before the tolerance
    NOT_A_PREIMAGE = "not a preimage"  # every step met its tolerance, but the result does not regenerate the input
    DIVERGED = "diverged"  # a residual or the latent blew up, or turned non-finite

    def __str__(self) -> str:
        return self.value

    @classmethod
    def worst(cls, *statuses: "Status | None") -> "Status":
        """The worst of the given statuses (CONVERGED when none is given)."""
        order = list(cls)
        known = [status for status in statuses if status is not None]
        return max(known, key=order.index) if known else cls.CONVERGED

    @classmethod
    def of_stop(cls, stop: str | None) -> "Status":
        """The status a per-step stop reason means ("tolerance", "plateau", "stalled", "max_iter", "diverged")."""
        if stop in (None, "tolerance", "converged"):
            return cls.CONVERGED
        if stop in ("plateau", "stalled") or (stop or "").endswith(("plateau", "stalled")):
            return cls.PLATEAU
        if "diverged" in (stop or ""):
            return cls.DIVERGED
        return cls.ITERATION_LIMIT
