"""Inversion of the decoder: find z_0 with D(z_0) = x, for any diffusers `AutoencoderKL`.

Methods (`DECODER_METHODS`), after Hong et al., "Gradient-free decoder inversion in latent diffusion
models" (NeurIPS 2024). With T(z) = E(D(z)) - E(x) (E = encoder posterior mean):

- ``"encoder"``: z = E(x), the usual shortcut (E is only a right inverse of D).
- ``"forward-step"``: z <- z - rho T(z) from E(x); converges when T is beta-cocoercive and rho < 2 beta.
- ``"inertial-km"``: y = z_k + alpha (z_k - z_{k-1}), z_{k+1} = y - 2 lambda beta T(y); converges when
  T is beta-cocoercive and lambda < `inertial_km_lambda_max(alpha)`.
- ``"gradient-free"`` (the paper's practical method): Adam (beta1 0.9, beta2 0.999, eps 1e-8, or 1e-4 in
  float16) driven by T(z) in place of a gradient, lr 0.01 with a cosine schedule, 10% linear warm-up,
  frozen from 80% of the schedule on (the schedule spans min(iterations, 100) steps, as in the
  authors' code).
- ``"gradient"``: the baseline, Adam on ||D(z) - x||^2 (summed) by back-propagation through D, lr 0.1
  with a cosine schedule (10% warm-up, decaying to 0), or any lr / ``schedule=False``. Always float32
  (float16 gradients underflow; a float16 autoencoder is copied to float32 for the run).

Every iterative method runs 100 iterations by default (the paper's default) through one loop:
evaluate a direction at a point, record residuals, check for divergence, take a step. The
gradient-free methods run under `torch.inference_mode`. Frames are processed `chunk_size` at a time;
frames never interact, so chunking changes memory, not results.

Divergence: a run stops as divergent when a residual or the latent turns non-finite, when
||D(z) - x|| grows past `divergence_factor` times its starting value, or when the latent moves
farther than `divergence_factor` times max(||E(x)||, sqrt(number of latent entries)) from its start
(scaled latents have unit variance); a run that ends with every residual
it tracks (||D(z) - x||, and ||T(z)|| for the gradient-free rules) more than 10% above its starting
value is divergent too (a step too large for the decoder's cocoercivity often oscillates with a
bounded residual rather than blowing up). By default (`on_divergence="raise"`)
`DecoderInversionDiverged` is raised, carrying the flagged result in `.result`; with
`on_divergence="warn"` the result is returned with ``converged=False``, ``diverged=True`` and a
`reason`, and a `RuntimeWarning` is issued. A diverged latent is never returned as a good one.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from diffinv.autoencoder import Autoencoder
from diffinv.cocoercivity import (
    cocoercivity_ratios,
    inertial_km_lambda_max,
    max_step_size,
    ratio_floor,
    residual_operator,
)
from diffinv.measure import measure

DECODER_METHODS = ("encoder", "forward-step", "inertial-km", "gradient-free", "gradient")

#: Options every method accepts.
COMMON_OPTIONS: dict[str, Any] = {
    "chunk_size": None,  # frames per chunk; None = all at once
    "divergence_factor": 10.0,
    "on_divergence": "raise",  # or "warn"
    "tol": None,  # stop a chunk early once its RMS residual (latent for gradient-free rules, image for "gradient") is <= tol
    "progress": False,  # tqdm bar over the iterations
}

#: Per-method options and their defaults.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "encoder": {},
    "forward-step": {"iterations": 100, "rho": 0.5},
    "inertial-km": {"iterations": 100, "alpha": 0.2, "lam": 0.5, "beta": 0.5},
    "gradient-free": {
        "iterations": 100,
        "lr": 0.01,
        "schedule": True,
        "horizon": 100,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": None,  # 1e-4 for a float16 autoencoder, else 1e-8
    },
    "gradient": {"iterations": 100, "lr": 0.1, "schedule": True, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
}


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
    peak_memory_bytes: int = 0
    residuals: list[float] = field(default_factory=list)
    converged: bool = True
    latent_residuals: list[float] = field(default_factory=list)
    diverged: bool = False
    reason: str | None = None
    dtype: str = ""
    frames: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    condition: StepCondition | None = None
    cocoercivity_min: float | None = None


class DecoderInversionDiverged(RuntimeError):
    """A decoder inversion blew up; `.result` holds the flagged `DecoderInversion`."""

    def __init__(self, message: str, result: DecoderInversion):
        super().__init__(message)
        self.result = result


def cosine_warmup_lr(step: int, lr: float, horizon: int, freeze: bool) -> float:
    """Learning rate at `step` (0-based): linear warm-up over horizon // 10 steps, then cosine to 0 at `horizon`.

    With `freeze`, the rate stops changing from 80% of the horizon on (the gradient-free schedule);
    without, steps past the horizon get rate 0.
    """
    horizon = max(1, horizon)
    warmup = horizon // 10
    if freeze:
        step = min(step, max(0, math.ceil(0.8 * horizon) - 1))
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (horizon - warmup))
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


# --- steppers: how one iterate follows from a direction -----------------------------------------


class _Stepper:
    """Holds the iterate; `point()` is where the direction is evaluated, `step()` moves on."""

    def __init__(self, start: torch.Tensor):
        self.z = start

    def point(self) -> torch.Tensor:
        return self.z

    def step(self, k: int, y: torch.Tensor, direction: torch.Tensor) -> None:
        raise NotImplementedError


class _ForwardStep(_Stepper):
    def __init__(self, start: torch.Tensor, step_size: float):
        super().__init__(start)
        self.step_size = step_size

    def step(self, k: int, y: torch.Tensor, direction: torch.Tensor) -> None:
        self.z = y - self.step_size * direction


class _InertialKM(_ForwardStep):
    def __init__(self, start: torch.Tensor, step_size: float, alpha: float):
        super().__init__(start, step_size)
        self.alpha = alpha
        self.previous = start  # so the first point has no inertia (alpha_1 = 0)

    def point(self) -> torch.Tensor:
        return self.z + self.alpha * (self.z - self.previous)

    def step(self, k: int, y: torch.Tensor, direction: torch.Tensor) -> None:
        self.previous = self.z
        super().step(k, y, direction)


class _Adam(_Stepper):
    def __init__(self, start: torch.Tensor, lr_at: Callable[[int], float], beta1: float, beta2: float, eps: float):
        super().__init__(start)
        self.lr_at, self.beta1, self.beta2, self.eps = lr_at, beta1, beta2, eps
        self.m = torch.zeros_like(start)
        self.v = torch.zeros_like(start)

    def step(self, k: int, y: torch.Tensor, direction: torch.Tensor) -> None:
        self.m.mul_(self.beta1).add_(direction, alpha=1 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(direction, direction, value=1 - self.beta2)
        m_hat = self.m / (1 - self.beta1 ** (k + 1))
        v_hat = self.v / (1 - self.beta2 ** (k + 1))
        self.z = y - self.lr_at(k) * m_hat / (v_hat.sqrt() + self.eps)


# --- directions: what the steppers follow --------------------------------------------------------

#: direction(y) -> (direction in float32, ||D(y) - x||^2, ||T(y)||^2 or None)
Direction = Callable[[torch.Tensor], tuple[torch.Tensor, float, float | None]]


def _sq(tensor: torch.Tensor) -> float:
    return float(tensor.detach().double().pow(2).sum())


def _gradient_free_direction(autoencoder: Autoencoder, image: torch.Tensor, target: torch.Tensor) -> Direction:
    def direction(y: torch.Tensor) -> tuple[torch.Tensor, float, float | None]:
        t, decoded = residual_operator(autoencoder, y, target)
        return t.float(), _sq(decoded.float() - image), _sq(t)

    return direction


def _gradient_direction(autoencoder: Autoencoder, image: torch.Tensor) -> Direction:
    with torch.inference_mode(False):
        reference = image.float().clone()

    def direction(y: torch.Tensor) -> tuple[torch.Tensor, float, float | None]:
        with torch.inference_mode(False), torch.enable_grad():
            leaf = y.detach().clone().requires_grad_(True)
            loss = (autoencoder.decode(leaf).float() - reference).pow(2).sum()
            (grad,) = torch.autograd.grad(loss, leaf)
        return grad.detach().float(), float(loss.detach()), None

    return direction


# --- the one iteration loop ----------------------------------------------------------------------


@dataclass
class _Trace:
    latent: torch.Tensor
    image_sq: list[float]
    latent_sq: list[float | None]
    iterations: int
    reason: str | None = None
    ratio_min: torch.Tensor | None = None  # per frame


def _iterate(
    stepper: _Stepper,
    direction: Direction,
    iterations: int,
    *,
    track_cocoercivity: torch.Tensor | None,
    divergence_factor: float,
    tol: float | None,
    image_numel: int,
    bar: tqdm,
) -> _Trace:
    start = stepper.z
    # scaled latents have unit variance by design, so RMS 1 is the smallest meaningful scale
    start_norm = max(float(start.double().norm()), math.sqrt(start.numel()))
    image_sq: list[float] = []
    latent_sq: list[float | None] = []
    ratio_min: torch.Tensor | None = None
    previous: tuple[torch.Tensor, torch.Tensor] | None = None
    floor: torch.Tensor | None = None
    for k in range(iterations):
        y = stepper.point()
        d, isq, lsq = direction(y)
        image_sq.append(isq)
        latent_sq.append(lsq)
        reason = _divergence(k, y, d, image_sq, start, start_norm, divergence_factor)
        if reason is not None:
            return _Trace(y, image_sq, latent_sq, k, reason, ratio_min)
        if track_cocoercivity is not None:  # E(x), for the rounding floor of the ratios
            if floor is None:
                floor = ratio_floor(d, track_cocoercivity)
            if previous is not None:
                ratio = cocoercivity_ratios(d - previous[1], y - previous[0], floor)
                ratio = torch.where(torch.isnan(ratio), torch.full_like(ratio, math.inf), ratio)
                ratio_min = ratio if ratio_min is None else torch.minimum(ratio_min, ratio)
            previous = (y, d)
        if tol is not None:
            rms = math.sqrt((lsq if lsq is not None else isq) / (y.numel() if lsq is not None else image_numel))
            if rms <= tol:
                return _Trace(y, image_sq, latent_sq, k, None, ratio_min)
        stepper.step(k, y, d)
        bar.update(1)
    return _Trace(stepper.z, image_sq, latent_sq, iterations, None, ratio_min)


def _divergence(
    k: int, y: torch.Tensor, d: torch.Tensor, image_sq: list[float], start: torch.Tensor, start_norm: float, factor: float
) -> str | None:
    if not (math.isfinite(image_sq[-1]) and bool(torch.isfinite(d).all()) and bool(torch.isfinite(y).all())):
        return f"non-finite values at iteration {k}"
    first = math.sqrt(max(image_sq[0], 1e-30))
    now = math.sqrt(image_sq[-1])
    if now > factor * first:
        return f"||D(z) - x|| grew from {first:.4g} to {now:.4g} (more than {factor:g}x) at iteration {k}"
    drift = float((y - start).double().norm())
    if drift > factor * start_norm:
        return (
            f"the latent moved {drift:.4g} from its start, more than {factor:g}x max(||E(x)||, sqrt(numel)) = "
            f"{start_norm:.4g}, at iteration {k}"
        )
    return None


# --- public entry point --------------------------------------------------------------------------


def check_decoder_name(name: str) -> str:
    """Return `name` if it is a decoder inversion method, else raise a ValueError listing them."""
    if name not in DECODER_METHODS:
        raise ValueError(f"unknown decoder method {name!r}; choose one of {', '.join(DECODER_METHODS)}")
    return name


def _resolve_options(method: str, options: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    check_decoder_name(method)
    accepted = {**COMMON_OPTIONS, **METHOD_DEFAULTS[method]}
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for decoder method {method!r}; accepted: {', '.join(sorted(accepted))}")
    resolved = {**accepted, **options}
    if method == "gradient-free" and resolved["eps"] is None:
        resolved["eps"] = 1e-4 if dtype == torch.float16 else 1e-8
    if int(resolved.get("iterations", 0)) < 0:
        raise ValueError("iterations must be >= 0")
    if resolved["chunk_size"] is not None and int(resolved["chunk_size"]) < 1:
        raise ValueError("chunk_size must be >= 1 or None")
    if resolved["on_divergence"] not in ("raise", "warn"):
        raise ValueError("on_divergence must be 'raise' or 'warn'")
    for name in ("rho", "lam", "beta", "lr"):
        if name in resolved and not float(resolved[name]) > 0:
            raise ValueError(f"{name} must be > 0, got {resolved[name]}")
    if method == "inertial-km":
        inertial_km_lambda_max(float(resolved["alpha"]))  # validates 0 <= alpha < 1
    return resolved


def _condition(method: str, opts: dict[str, Any], beta_observed: float | None) -> StepCondition | None:
    if method == "forward-step":
        step, alpha, beta_assumed, rule = float(opts["rho"]), 0.0, None, "forward step: rho < 2 beta"
    elif method == "inertial-km":
        alpha = float(opts["alpha"])
        beta_assumed = float(opts["beta"])
        step = 2 * float(opts["lam"]) * beta_assumed
        rule = f"inertial KM: lambda < lambda_max(alpha={alpha:g}) = {inertial_km_lambda_max(alpha):.4g} and beta <= observed beta"
    else:
        return None
    lam_max = inertial_km_lambda_max(alpha)
    if beta_observed is None:
        holds = None if method == "forward-step" else (False if float(opts["lam"]) >= lam_max else None)
        bound = None
    else:
        bound = max_step_size(beta_observed, alpha)
        if method == "forward-step":
            holds = beta_observed > 0 and step < bound
        else:
            holds = float(opts["lam"]) < lam_max and 0 < beta_assumed <= beta_observed
    return StepCondition(rule, step, lam_max, beta_assumed, beta_observed, bound, holds)


def _ended_worse(residuals: list[float], latent_residuals: list[float], margin: float = 1.1) -> bool:
    """True when every residual the run tracked ended more than `margin` times its starting value."""
    worse = residuals[-1] > margin * residuals[0]
    if len(latent_residuals) > 1:
        worse = worse and latent_residuals[-1] > margin * latent_residuals[0]
    return worse


def _as_batch(image: torch.Tensor) -> torch.Tensor:
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W] in [-1, 1], got shape {tuple(image.shape)}")
    return image


def invert_decoder(autoencoder: Autoencoder, image: torch.Tensor, method: str = "encoder", **options: Any) -> DecoderInversion:
    """Recover z_0 from images [B, 3, H, W] in [-1, 1] with the named method (see the module docstring).

    Options: every method takes `chunk_size`, `divergence_factor`, `on_divergence`, `tol`, `progress`;
    the rest are in `METHOD_DEFAULTS` (iterations, rho, alpha/lam/beta, lr/schedule/horizon/beta1/beta2/eps).
    The latent comes back in the autoencoder's dtype, on its device.
    """
    opts = _resolve_options(method, options, autoencoder.dtype)
    image = _as_batch(image)
    frames = image.shape[0]
    size = int(opts["chunk_size"] or frames)
    chunks = list(image.split(size))
    work = autoencoder
    if method == "gradient" and autoencoder.dtype != torch.float32:
        work = None  # a float32 copy is made inside the measured block: it is part of the method's cost
    traces: list[_Trace] = []
    iterations = int(opts.get("iterations", 0))
    bar = tqdm(total=iterations * len(chunks), desc=f"decoder inversion ({method})", disable=not opts["progress"] or not iterations, leave=False)
    with measure(autoencoder.device) as cost:
        if work is None:
            work = Autoencoder(copy.deepcopy(autoencoder.vae).float())
        for chunk in chunks:
            traces.append(_run_chunk(method, work, chunk.to(work.device, torch.float32), opts, bar))
    bar.close()
    return _finish(method, autoencoder, work, chunks, traces, opts, cost.seconds, cost.peak_memory_bytes)


def _run_chunk(method: str, work: Autoencoder, x: torch.Tensor, opts: dict[str, Any], bar: tqdm) -> _Trace:
    if method == "gradient":
        with torch.no_grad():
            start = work.encode(x).float()
        stepper = _Adam(start, _lr_rule(opts, freeze=False), opts["beta1"], opts["beta2"], opts["eps"])
        return _iterate(stepper, _gradient_direction(work, x), int(opts["iterations"]), track_cocoercivity=None,
                        divergence_factor=opts["divergence_factor"], tol=opts["tol"], image_numel=x.numel(), bar=bar)
    with torch.inference_mode():
        target = work.encode(x)
        start = target.float()
        if method == "encoder":
            return _Trace(start, [], [], 0)
        if method == "forward-step":
            stepper: _Stepper = _ForwardStep(start, float(opts["rho"]))
        elif method == "inertial-km":
            stepper = _InertialKM(start, 2 * float(opts["lam"]) * float(opts["beta"]), float(opts["alpha"]))
        else:
            stepper = _Adam(start, _lr_rule(opts, freeze=True), opts["beta1"], opts["beta2"], opts["eps"])
        return _iterate(stepper, _gradient_free_direction(work, x, target), int(opts["iterations"]),
                        track_cocoercivity=target, divergence_factor=opts["divergence_factor"], tol=opts["tol"],
                        image_numel=x.numel(), bar=bar)


def _lr_rule(opts: dict[str, Any], freeze: bool) -> Callable[[int], float]:
    lr = float(opts["lr"])
    if not opts["schedule"]:
        return lambda k: lr
    horizon = int(opts["iterations"])
    if freeze:
        horizon = min(horizon, int(opts["horizon"]))
    return lambda k: cosine_warmup_lr(k, lr, horizon, freeze)


def _finish(
    method: str,
    autoencoder: Autoencoder,
    work: Autoencoder,
    chunks: list[torch.Tensor],
    traces: list[_Trace],
    opts: dict[str, Any],
    seconds: float,
    peak: int,
) -> DecoderInversion:
    """Assemble the result: the final residuals (one more E(D(z)) per chunk, outside the timing), the flags."""
    length = max(len(t.image_sq) for t in traces)
    image_numel = sum(c.numel() for c in chunks)
    latent_numel = sum(t.latent.numel() for t in traces)
    final_image_sq, final_latent_sq = 0.0, 0.0
    with torch.inference_mode():
        for chunk, trace in zip(chunks, traces):
            x = chunk.to(work.device, torch.float32)
            t, decoded = residual_operator(work, trace.latent, work.encode(x))
            final_image_sq += _sq(decoded.float() - x)
            final_latent_sq += _sq(t)

    def padded(values: list, k: int) -> float | None:
        return values[min(k, len(values) - 1)] if values else None

    residuals, latent_residuals = [], []
    for k in range(length):
        residuals.append(math.sqrt(sum(padded(t.image_sq, k) for t in traces) / image_numel))
        lsq = [padded(t.latent_sq, k) for t in traces]
        if all(v is not None for v in lsq):
            latent_residuals.append(math.sqrt(sum(lsq) / latent_numel))
    residuals.append(math.sqrt(final_image_sq / image_numel))
    latent_residuals.append(math.sqrt(final_latent_sq / latent_numel))

    reasons = [f"chunk {i}: {t.reason}" if len(traces) > 1 else t.reason for i, t in enumerate(traces) if t.reason]
    latent = torch.cat([t.latent for t in traces])
    if not reasons and not torch.isfinite(latent).all():
        reasons.append("non-finite values in the returned latent")
    if not reasons and length > 0 and _ended_worse(residuals, latent_residuals):
        reasons.append(
            f"no convergence: ||D(z) - x|| went from {residuals[0]:.4g} to {residuals[-1]:.4g} (RMS)"
            + (f" and ||T(z)|| from {latent_residuals[0]:.4g} to {latent_residuals[-1]:.4g}" if len(latent_residuals) > 1 else "")
            + f" over {max(t.iterations for t in traces)} iterations"
        )
    diverged = bool(reasons)
    ratios = [t.ratio_min for t in traces if t.ratio_min is not None]
    beta_observed = None
    if ratios:
        finite = torch.cat(ratios)
        finite = finite[torch.isfinite(finite)]
        beta_observed = float(finite.min()) if finite.numel() else None
    condition = _condition(method, opts, beta_observed)
    converged = not diverged
    if opts["tol"] is not None and method != "encoder":
        final = residuals[-1] if method == "gradient" else latent_residuals[-1]
        converged = converged and final <= opts["tol"]
    result = DecoderInversion(
        latent=latent.to(autoencoder.dtype),
        method=method,
        iterations=max(t.iterations for t in traces),
        seconds=seconds,
        peak_memory_bytes=peak,
        residuals=residuals,
        converged=converged,
        latent_residuals=latent_residuals,
        diverged=diverged,
        reason="; ".join(reasons) if reasons else None,
        dtype=str(work.dtype).removeprefix("torch."),
        frames=sum(c.shape[0] for c in chunks),
        options={k: v for k, v in opts.items() if k != "progress"},
        condition=condition,
        cocoercivity_min=beta_observed,
    )
    if condition is not None and condition.holds is False:
        warnings.warn(f"{method}: convergence is not guaranteed, {condition.summary()}", RuntimeWarning, stacklevel=3)
    if diverged:
        message = f"decoder inversion ({method}) diverged: {result.reason}"
        if opts["on_divergence"] == "raise":
            raise DecoderInversionDiverged(message, result)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return result
