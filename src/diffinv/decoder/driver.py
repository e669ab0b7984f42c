"""Inversion of the decoder: find z_0 with D(z_0) = x, for any diffusers `AutoencoderKL` (the entry point).

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

What is fitted (`diffinv.decoder.target`): by default (``clipped=True``) the image is taken to be what a
file holds, clipped to [-1, 1], so a decoding past a bound that the pixel sits at fits it; "gradient"
then descends the fit residual ||r(D(z))||^2 and the gradient-free rules use T(z) = E(x + r(D(z))) - E(x).
``clipped=False`` is the plain fit above, for float images that were never clipped.

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
`on_divergence="report"` the result is returned with ``converged=False``, ``diverged=True`` and a
`reason`, and a `RuntimeWarning` is issued. A diverged latent is never returned as a good one.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from diffinv.decoder.cocoercivity import residual_operator
from diffinv.decoder.gradient import gradient_direction
from diffinv.decoder.gradient_free import gradient_free_direction, step_condition
from diffinv.decoder.iteration import AdamUpdate, ForwardStepUpdate, InertialKMUpdate, Stepper, Trace, fit_latent, squared_norm
from diffinv.decoder.methods import DECODERS, DecoderMethod
from diffinv.decoder.options import cosine_warmup_lr
from diffinv.decoder.result import DecoderInversion, DecoderInversionDiverged
from diffinv.decoder.target import ImageTarget, clipped_fraction
from diffinv.models.autoencoder import Autoencoder
from diffinv.utils.measure import measure
from diffinv.utils.status import OnDivergence, check_on_divergence


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


def invert_decoder(autoencoder: Autoencoder, image: torch.Tensor, method: str | DecoderMethod = "encoder", *,
                   progress: bool = False, on_divergence: OnDivergence = "raise", **options: Any) -> DecoderInversion:
    """Recover z_0 from images [B, 3, H, W] in [-1, 1] with `method` (see the module docstring): a configuration
    (`GradientFree(iterations=50)`) or a name, `options` overriding its fields (`diffinv.decoder.methods`);
    `progress` shows a bar over the iterations. `clipped` (default True: what an image file holds) fits
    clip(D(z)) to the image; pass False for a float image that was never clipped (an image outside
    [-1, 1] is refused with it on). `rounded` (default False) lets a pixel lie anywhere within half an
    8-bit step of its value (the image must then be on the 8-bit grid). The latent comes back in the
    autoencoder's dtype, on its device; `seconds` covers every step of the stage, input checks included.
    `on_divergence`: raise `DecoderInversionDiverged`, or report (warn and return the flagged result).
    """
    check_on_divergence(on_divergence)
    config = DECODERS.resolve(method, options)
    method = config.name
    opts = {**config.resolved(autoencoder.dtype), "progress": progress, "config": config, "on_divergence": on_divergence}
    image = _as_batch(image)
    frames = image.shape[0]
    size = int(opts["chunk_size"] or frames)
    chunks = list(image.split(size))
    work = autoencoder
    if method == "gradient" and autoencoder.dtype != torch.float32:
        work = None  # a float32 copy is made inside the measured block: it is part of the method's cost
    traces: list[Trace] = []
    finals: list[tuple[float, float]] = []
    iterations = int(opts.get("iterations", 0))
    bar = tqdm(total=iterations * len(chunks), desc=f"decoder inversion ({method})", disable=not opts["progress"] or not iterations, leave=False)
    with measure(autoencoder.device) as cost:
        # the fit of each chunk (a bad image is refused here, before any encode or decode)
        targets = [ImageTarget(chunk.to(autoencoder.device, torch.float32), bool(opts["clipped"]), bool(opts["rounded"]))
                   for chunk in chunks]
        fraction = clipped_fraction(image)
        if work is None:
            work = Autoencoder(copy.deepcopy(autoencoder.vae).float())
        for target in targets:
            trace, encoded = _run_chunk(method, work, target.image, target, opts, bar)
            traces.append(trace)
            if method != "encoder":  # the residual at the returned latent is part of the method's work
                finals.append(_final_residuals(work, target, encoded, trace.latent))
    bar.close()
    return _finish(method, autoencoder, work, chunks, traces, finals, fraction, opts, cost.seconds, cost.peak_memory_bytes)


def _run_chunk(
    method: str, work: Autoencoder, x: torch.Tensor, target: ImageTarget, opts: dict[str, Any], bar: tqdm
) -> tuple[Trace, torch.Tensor]:
    """One chunk's run: its trace and E(x)."""
    if method == "gradient":
        with torch.no_grad():
            encoded = work.encode(x)
            start = encoded.float()
        stepper = AdamUpdate(start, _lr_rule(opts, freeze=False), opts["beta1"], opts["beta2"], opts["eps"])
        trace = fit_latent(stepper, gradient_direction(work, target), int(opts["iterations"]), track_cocoercivity=None,
                        divergence_factor=opts["divergence_factor"], tol=opts["tol"], image_numel=x.numel(), bar=bar)
        return trace, encoded
    with torch.inference_mode():
        encoded = work.encode(x)
        start = encoded.float()
        if method == "encoder":
            return Trace(start, [], [], 0), encoded
        if method == "forward-step":
            stepper: Stepper = ForwardStepUpdate(start, float(opts["rho"]))
        elif method == "inertial-km":
            stepper = InertialKMUpdate(start, 2 * float(opts["lam"]) * float(opts["beta"]), float(opts["alpha"]))
        else:
            stepper = AdamUpdate(start, _lr_rule(opts, freeze=True), opts["beta1"], opts["beta2"], opts["eps"])
        trace = fit_latent(stepper, gradient_free_direction(work, target, encoded), int(opts["iterations"]),
                        track_cocoercivity=encoded, divergence_factor=opts["divergence_factor"], tol=opts["tol"],
                        image_numel=x.numel(), bar=bar)
        return trace, encoded


def _final_residuals(work: Autoencoder, target: ImageTarget, encoded: torch.Tensor, latent: torch.Tensor) -> tuple[float, float]:
    """(||r(D(z))||^2, ||T(z)||^2) at the returned latent: one decode and one encode."""
    with torch.inference_mode():
        t, decoded = residual_operator(work, latent, encoded, None if target.plain else target.fitted)
        return squared_norm(target.residual(decoded)), squared_norm(t)


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
    traces: list[Trace],
    finals: list[tuple[float, float]],
    fraction: float,
    opts: dict[str, Any],
    seconds: float,
    peak: int,
) -> DecoderInversion:
    """Assemble the result from the measured runs: residual histories, the flags, the step condition."""
    length = max(len(t.image_sq) for t in traces)
    image_numel = sum(c.numel() for c in chunks)
    latent_numel = sum(t.latent.numel() for t in traces)

    def padded(values: list, k: int) -> float | None:
        return values[min(k, len(values) - 1)] if values else None

    residuals, latent_residuals = [], []
    for k in range(length):
        residuals.append(math.sqrt(sum(padded(t.image_sq, k) for t in traces) / image_numel))
        lsq = [padded(t.latent_sq, k) for t in traces]
        if all(v is not None for v in lsq):
            latent_residuals.append(math.sqrt(sum(lsq) / latent_numel))
    if finals:
        residuals.append(math.sqrt(sum(f[0] for f in finals) / image_numel))
        latent_residuals.append(math.sqrt(sum(f[1] for f in finals) / latent_numel))

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
    condition = step_condition(method, opts, beta_observed)
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
        options={k: v for k, v in opts.items() if k not in ("progress", "config", "on_divergence")},
        method_config=opts["config"].as_dict(),
        condition=condition,
        cocoercivity_min=beta_observed,
        clipped_fraction=fraction,
    )
    if condition is not None and condition.holds is False:
        warnings.warn(f"{method}: convergence is not guaranteed, {condition.summary()}", RuntimeWarning, stacklevel=3)
    if diverged:
        message = f"decoder inversion ({method}) diverged: {result.reason}"
        if opts["on_divergence"] == "raise":
            raise DecoderInversionDiverged(message, result)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return result
