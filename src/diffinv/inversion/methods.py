"""The sampler-inversion methods as typed, immutable configurations (`diffinv.utils.config.Config`).

Each class's fields are the method's options, with their defaults written here once and checked on
construction; `build()` makes the per-run inverse step the driver calls. A name string is shorthand for a
class's defaults (`METHODS.resolve("exact")`), options override them (`"exact:tol=1e-8"`), and presets are
named instances: `exact-paper` is Hong et al.'s setting; the `exact-*` variants are the benchmarks'.

`Exact`'s defaults are the best setting measured on the bundled model (noise recovered first, network calls
second; docs/sampler-inversion.md, "Fewer network calls"): each step starts at no network call from the noise
prediction extrapolated along the steps already solved, iterates x_s <- the step run backwards with the network
at x_s (rho = 1 / the coefficient of x_s) with Anderson acceleration (3) and a plateau stop to a relative
residual of 1e-6, and returns the update after the last evaluated iterate when the observed contraction puts it
within the tolerance; a multistep sampler's earlier predictions come from two fine naive sub-steps per interval,
in one sweep for DPM-Solver++ and up to three for the samplers with their own stepper (UniPC, PNDM, DEIS). The paper's forward step at its tolerance is the `exact-paper` preset; `exact-aa` is
the forward step with Anderson from the naive warm start (the default before).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffinv.inversion.driver import InverseStep
from diffinv.inversion.easyinv import EasyInvStep
from diffinv.inversion.exact import PAPER_TOL, ImplicitInversion
from diffinv.inversion.iteration import StepSize
from diffinv.inversion.naive import naive_step
from diffinv.inversion.renoise import NoiseRegularization, ReNoiseStep
from diffinv.utils.config import Config, Registry, bounded


@dataclass(frozen=True, kw_only=True)
class Method(Config):
    """Base of the sampler-inversion methods: `build()` makes the inverse step of one run."""

    kind = "inversion method"

    def build(self) -> InverseStep:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Naive(Method):
    """DDIM inversion and its analogue for every sampler: each step run backwards with the network evaluated
    at the known, less noisy end. One network call per step; no options."""

    name = "naive"

    def build(self) -> InverseStep:
        return naive_step


@dataclass(frozen=True, kw_only=True)
class Exact(Method):
    """Exact inversion (Hong et al., CVPR 2024): each inverse step's implicit equation solved from the naive
    warm start (`diffinv.inversion.exact`)."""

    name = "exact"
    iteration: Literal["forward-step", "gradient"] = bounded(
        "forward-step", help="forward-step (the paper's) or gradient (descent on the squared residual)")
    rho: float | None = bounded(None, above=0.0, help="step size of the forward step (its peak, after the warm-up; "
                                                     "None: 1 / the coefficient of x_s in the step, fixed-point iteration)")
    warmup: int | None = bounded(None, min=0, help="iterations of linear warm-up of rho (None: 20, or 0 with Anderson)")
    factor: float = bounded(0.5, above=0.0, max=1.0, help="rho is multiplied by this when the residual plateaus")
    patience: int = bounded(20, min=0, help="iterations without 0.01% improvement before rho is cut (0: never)")
    max_iter: int = bounded(500, min=1, help="iterations per step at most")
    tol: float | None = bounded(1e-6, above=0.0, help="per-step tolerance on ||Phi(x_s) - x_t|| / ||x_t||")
    anderson: int = bounded(3, min=0, help="Anderson acceleration window (0: off)")
    stall: int | None = bounded(10, min=1, help="give a step up after this many iterations without a 1% fall")
    fine_steps: int = bounded(2, min=1, help="fine naive sub-steps per interval for a multistep sampler's earlier predictions")
    sweeps: int | None = bounded(None, min=1, help="whole inversions at most on a multistep sampler, each from the last's "
                                                   "terms (None: 1 for DPM-Solver++, 3 for a sampler with its own stepper)")
    refine: Literal[None, "lm", "lm-dense"] = bounded(
        None, help="Levenberg-Marquardt for steps left above tol: lm (matrix-free) or lm-dense (full Jacobians)")
    refine_iter: int = bounded(10, min=1, help="Levenberg-Marquardt iterations")
    refine_inner: int = bounded(50, min=1, help="conjugate-gradient iterations per matrix-free Levenberg-Marquardt step")
    regeneration_tol: float | None = bounded(
        1e-2, above=0.0, help="on a multistep sampler, the relative error of regenerating z_0 allowed (None: unchecked)")
    keep_better: bool = bounded(True, help="when steps do not converge, return per latent whichever of this noise and "
                                           "naive inversion's regenerates z_0 closer (costs a naive pass and two samplings)")
    gaussian_test: float | None = bounded(
        1e-6, above=0.0, below=1.0, help="keep_better passes over a noise whose norm a Gaussian draw reaches with "
                                         "a probability below this (None: regeneration alone)")
    warm_start: Literal["naive", "previous", "extrapolate"] = bounded(
        "extrapolate", help="each step's start: the naive step (one network call), or the step solved with the noise "
                      "prediction of the last solved step (previous) or extrapolated from the last two (no call)")
    final_update: bool = bounded(True, help="return one update past the last evaluated iterate when the observed "
                                            "contraction says it meets tol (saves the confirming network call)")
    multistep_terms: Literal["fine-naive", "extrapolate"] = bounded(
        "fine-naive", help="a multistep sampler's earlier predictions in the first sweep: from a fine naive inversion "
                           "(network calls) or extrapolated from the steps solved so far (none)")

    def check(self) -> None:
        if self.rho is None and self.iteration == "gradient":
            raise ValueError("option rho of inversion method 'exact' must be a step size with iteration=gradient, got None")

    def build(self) -> InverseStep:
        warmup = self.warmup if self.warmup is not None else (0 if self.anderson else 20)
        return ImplicitInversion(
            iteration=self.iteration, fixed_point=self.rho is None, final_update=self.final_update, warm_start=self.warm_start,
            multistep_terms=self.multistep_terms,
            fine_steps=self.fine_steps, sweeps=self.sweeps, refine=self.refine,
            refine_iter=self.refine_iter, refine_inner=self.refine_inner, regeneration_tol=self.regeneration_tol,
            step_size=StepSize(rho=self.rho or 1.0, warmup=warmup, factor=self.factor, patience=self.patience),
            max_iter=self.max_iter, tol=self.tol, anderson=self.anderson, stall=self.stall,
        )


@dataclass(frozen=True, kw_only=True)
class FixedPoint(Method):
    """Fixed-point iteration (Pan et al. 2023): x_s <- the naive step evaluated at x_s, optionally Anderson-
    accelerated or averaged; diverges where guidance makes the network's Jacobian large."""

    name = "fixed-point"
    max_iter: int = bounded(500, min=1, help="iterations per step at most")
    tol: float | None = bounded(PAPER_TOL, above=0.0, help="per-step tolerance on the relative residual")
    anderson: int = bounded(0, min=0, help="Anderson acceleration window (0: off)")
    average: bool = bounded(False, help="average the iterates (Pan et al.'s averaging)")
    stall: int | None = bounded(50, min=1, help="give a step up after this many iterations without a 1% fall")
    fine_steps: int = bounded(10, min=1, help="fine naive sub-steps per interval for a multistep sampler's earlier predictions")
    regeneration_tol: float | None = bounded(1e-2, above=0.0, help="as Exact's")
    keep_better: bool = bounded(True, help="as Exact's")
    gaussian_test: float | None = bounded(1e-6, above=0.0, below=1.0, help="as Exact's")
    warm_start: Literal["naive", "previous", "extrapolate"] = bounded("naive", help="as Exact's")
    final_update: bool = bounded(False, help="as Exact's")

    def build(self) -> InverseStep:
        return ImplicitInversion(fixed_point=True, fine_steps=self.fine_steps, average=self.average,
                                 warm_start=self.warm_start, final_update=self.final_update,
                                 regeneration_tol=self.regeneration_tol, max_iter=self.max_iter, tol=self.tol,
                                 anderson=self.anderson, stall=self.stall)


@dataclass(frozen=True, kw_only=True)
class EasyInv(Method):
    """EasyInv (Zhang et al. 2024): naive inversion, the latents inside a window blended with the one before
    (`diffinv.inversion.easyinv`). eta and window default to the preset of the model's family."""

    name = "easyinv"
    eta: float | None = bounded(None, min=0.0, max=1.0, help="weight of the new latent in the blend (None: the preset's)")
    window: tuple[float, ...] | None = bounded(
        None, min=0.0, max=1.0, help="[start, end] of the blended steps as fractions (None: the preset's)")
    order: Literal["paper", "code"] = bounded("paper", help="blend before the next network call (paper) or after (code)")
    preset: Literal[None, "sd", "sdxl"] = bounded(None, help="the authors' settings for SD 1.x-class or SDXL models "
                                                            "(None: the model family's)")

    def check(self) -> None:
        if self.window is not None and (len(self.window) != 2 or self.window[0] > self.window[1]):
            raise ValueError(f"option window of inversion method 'easyinv' must satisfy 0 <= start <= end <= 1, "
                             f"got {list(self.window)}")

    def build(self) -> InverseStep:
        return EasyInvStep(eta=self.eta, window=self.window, order=self.order, preset=self.preset)


@dataclass(frozen=True, kw_only=True)
class ReNoise(Method):
    """ReNoise (Garibi et al., ECCV 2024): K renoising iterations per step, the mean of chosen estimates
    (`diffinv.inversion.renoise`). Defaults: the authors' code."""

    name = "renoise"
    renoise_steps: int = bounded(9, min=0, help="renoising iterations K per step")
    average: int | tuple[int, ...] = bounded(2, min=0, help="estimates averaged: the last n, or [start, stop)")
    early_timestep: int = bounded(250, min=0, help="steps whose network timestep is below this use the early settings")
    early_renoise_steps: int = bounded(5, min=0, help="renoising iterations of the early steps at most")
    early_average: int | tuple[int, ...] = bounded((0, 5), min=0, help="estimates averaged at the early steps")
    anderson: int = bounded(0, min=0, help="Anderson acceleration of the renoising iterates (0: off, the paper's)")
    noise_regularization: bool = bounded(False, help="pull the noise predictions towards Gaussian statistics")
    lambda_kl: float = bounded(0.065, min=0.0, help="weight of the KL term")
    lambda_ac: float = bounded(20.0, min=0.0, help="weight of the auto-correlation term")
    regularization_steps: int = bounded(4, min=0, help="rounds of the KL gradient step")
    ac_rolls: int = bounded(5, min=1, help="auto-correlation gradient steps")
    seed: int = bounded(0, help="seed of the KL reference noise")

    def check(self) -> None:
        for name in ("average", "early_average"):
            value = getattr(self, name)
            if isinstance(value, tuple) and (len(value) != 2 or not value[0] < value[1]):
                raise ValueError(f"option {name} of inversion method 'renoise' must be a count or [start, stop] with "
                                 f"0 <= start < stop, got {list(value)}")
            if isinstance(value, int) and value < 1:
                raise ValueError(f"option {name} of inversion method 'renoise' must be a count of at least 1, got {value}")

    def build(self) -> InverseStep:
        regularization = (NoiseRegularization(self.lambda_kl, self.lambda_ac, self.regularization_steps, self.ac_rolls,
                                              self.seed) if self.noise_regularization else None)
        return ReNoiseStep(self.renoise_steps, self.average, self.early_timestep, self.early_renoise_steps,
                           self.early_average, self.anderson, regularization)


#: The sampler-inversion methods by name, and their presets.
METHODS: Registry[Method] = Registry("inversion method", [Naive, Exact, FixedPoint, EasyInv, ReNoise])
#: Hong et al.'s setting: the forward step with its warm-up and plateau halving, their absolute threshold
#: as a relative tolerance, ten fine sub-steps, one sweep.
_FORWARD_STEP = {"rho": 0.5, "warm_start": "naive", "final_update": False, "sweeps": 3}
METHODS.preset("exact-paper", Exact(anderson=0, stall=None, tol=PAPER_TOL, fine_steps=10, **{**_FORWARD_STEP, "sweeps": 1}))
#: The forward step with Anderson acceleration from the naive warm start (the default until the cheaper one).
METHODS.preset("exact-aa", Exact(**_FORWARD_STEP))
METHODS.preset("exact-gd", Exact(iteration="gradient", anderson=0, stall=None, tol=PAPER_TOL, fine_steps=10,
                                 **{**_FORWARD_STEP, "sweeps": 1}))
#: Gradient descent with Anderson, for ill-conditioned steps (large jumps to sigma ~ 0).
METHODS.preset("exact-gd-aa", Exact(iteration="gradient", rho=0.7, anderson=8, stall=30, sweeps=2, warm_start="naive",
                                    final_update=False))
#: The default, and Levenberg-Marquardt for the steps it leaves above the tolerance (matrix-free, or dense).
METHODS.preset("exact-lm", Exact(refine="lm"))
METHODS.preset("exact-lm-dense", Exact(refine="lm-dense"))
