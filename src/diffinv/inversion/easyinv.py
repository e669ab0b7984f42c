"""EasyInv (Zhang, Lin, Yan, Ji, arXiv 2408.05159): naive inversion plus a blend with the previous latent.

Inside a window of inverse steps the latent just reached is pulled back towards the one before it,

    z_i <- eta * z_i + (1 - eta) * z_{i-1},

which raises the weight of the clean latent z_0 in every later latent and damps the error that naive
inversion accumulates. No extra network calls: the cost is naive inversion's.

Which latents are blended: z_i (the latent after i inverse steps, z_0 the clean one) for every i with
``start * N < i < end * N``, N the number of steps, both bounds strict, as in the authors' code
(``inject_steps * N < i < (inject_steps + inject_len) * N``). Defaults from the authors: eta 0.5 and
the window 5%..25% for SD 1.x-class models (``preset="sd"``); eta 0.8 and 85%..95% for SDXL-class
models (``preset="sdxl"``).

Blend order. The paper (Eq. 16) blends the *result* of an inverse step with its input, so the next
step's network call sees the blended latent (``order="paper"``, the default). The authors' public code
(potato-kitty/EasyInv, ``utilsV14.invert`` and ``EasyInv_SDXL/utils.SDXL``) calls the network on the
unblended latent first and blends just before the DDIM update, which then starts from the blended
latent with the noise predicted at the unblended one (``order="code"``). The blended latents are the
same in both; only where the network is evaluated for the step that starts from them differs.
"""

from __future__ import annotations

import torch

from diffinv.inversion.driver import StepOutcome
from diffinv.inversion.naive import inverse_step
from diffinv.models.denoiser import Denoiser
from diffinv.sampler.schedule import Schedule, Step

#: Preset name -> (eta, (window start, window end) as fractions of the steps), from the authors' code.
PRESETS: dict[str, tuple[float, tuple[float, float]]] = {
    "sd": (0.5, (0.05, 0.25)),
    "sdxl": (0.8, (0.85, 0.95)),
}


class EasyInvStep:
    """`InverseStep` of EasyInv: naive inverse steps, the latents inside the window blended with their predecessor.

    Built by the `diffinv.inversion.methods.EasyInv` configuration, which checks the values."""

    def __init__(
        self,
        eta: float | None = None,
        window: tuple[float, float] | None = None,
        order: str = "paper",
        preset: str | None = None,
    ) -> None:
        self.preset, self._eta_given, self._window_given = preset, eta, window
        self.configure(preset or "sd")
        self.order = order
        self.total: int | None = None
        self._previous: torch.Tensor | None = None

    def configure(self, preset: str) -> None:
        """Take the preset's eta and window, except where they were given."""
        preset_eta, preset_window = PRESETS[preset]
        self.eta = float(preset_eta if self._eta_given is None else self._eta_given)
        start, end = preset_window if self._window_given is None else self._window_given
        self.window = (float(start), float(end))

    def blended(self, total: int) -> list[int]:
        """Indices i of the latents z_i that are blended in an inversion of `total` steps (z_0 is the clean one)."""
        start, end = self.window
        if self.eta == 1.0:
            return []
        return [i for i in range(1, total + 1) if start * total < i < end * total]

    def prepare(self, denoiser: Denoiser, schedule: Schedule, latent: torch.Tensor) -> None:
        """Learn the number of steps (the window is a fraction of it) and forget any earlier run; with no
        preset given, an SDXL model gets the authors' SDXL preset and every other family their SD preset."""
        if self.preset is None:
            self.configure("sdxl" if denoiser.family == "sdxl" else "sd")
        self.total = len(schedule)
        self._blended = set(self.blended(self.total))
        self._previous = None

    def blend(self, latent: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """eta * latent + (1 - eta) * previous."""
        return self.eta * latent + (1.0 - self.eta) * previous

    def __call__(
        self, denoiser: Denoiser, x: torch.Tensor, step: Step, history: list, position: int
    ) -> StepOutcome:
        """One naive inverse step (any sampler's), its result or its start blended inside the window."""
        if self.total is None:
            raise RuntimeError("EasyInvStep.prepare() must run before the steps (run it through invert_sampler)")
        if self.order == "paper":
            latent, prediction, record = inverse_step(denoiser, x, step, history)
            if position + 1 in self._blended:
                latent = self.blend(latent, x)
            return StepOutcome(latent=latent, data_prediction=prediction.data, record=record)
        start = self.blend(x, self._previous) if position in self._blended else x
        latent, prediction, record = inverse_step(denoiser, start, step, history, evaluate_at=x)
        self._previous = start
        return StepOutcome(latent=latent, data_prediction=prediction.data, record=record)
