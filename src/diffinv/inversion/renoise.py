"""ReNoise (Garibi, Patashnik, Voynov, Averbuch-Elor, Cohen-Or, ECCV 2024): renoising iterations per step.

Each inverse step looks for the noisier latent z with z = f(z), where f(z) is the explicit inverse
step from the known latent x with the network evaluated at z (`naive.inverse_step(..., evaluate_at=z)`; for a sampler that calls the network more than once per step,
the first call is at z, the later ones where the step puts them).
ReNoise starts from the naive estimate z^(1) = f(x) and renoises K times, z^(k+1) = f(z^(k)): K + 1
network calls and K + 1 estimates per step. The step's result is the mean of some of the estimates
(the update is affine in the network output, so this is the paper's "average of the noise
predictions"). With K = 0 it is naive inversion exactly.

Defaults, from the authors' code (garibida/ReNoise-Inversion, ``src/config.py`` and
``src/renoise_inversion.py``): K = 9 and the mean of the last 2 estimates (their ``average_step_range``
(8, 10)); for steps whose timestep is below 250 (the ones nearest the image) K = min(K, 5) and the mean
of the first 5 estimates (their ``max_num_renoise_steps_first_step`` and ``average_first_step_range``
(0, 5)). `average` / `early_average` take either a count n (the last n estimates) or a pair
[start, stop] (estimates start..stop-1, 0-based, in the order they were made); a choice that selects no
estimate means the last estimate. `anderson=m` (off by default, not in the paper) mixes the renoising
iterates with Anderson acceleration of window m; the loop is the shared
`diffinv.inversion.iteration.fixed_point`; when its divergence guard stops the loop early (a non-finite
residual or one far above the best), the step returns the last estimate, so a NaN there stops the run
with `InversionDiverged` naming the step.

Noise regularization (the paper's editability aid, after pix2pix-zero; off by default,
``noise_regularization=True``): the noise predictions of the estimates from the first averaged one on
are pulled towards Gaussian statistics before their update, by `regularization_steps` rounds of a
gradient step on a patch-wise KL term against the network's prediction at a forward-noised z_0
(alpha z_0 + sigma n, n seeded; one extra network call per step) with weight `lambda_kl`, and
`ac_rolls` gradient steps on a multi-scale auto-correlation loss with weight `lambda_ac` (the authors'
values: 0.065, 20, 4 rounds, 5 rolls). Unlike the authors' code the mean itself is not regularized a
second time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffinv.inversion.driver import StepOutcome
from diffinv.inversion.iteration import fixed_point
from diffinv.inversion.naive import inverse_step
from diffinv.models.denoiser import Denoiser
from diffinv.models.prediction import predict
from diffinv.sampler.schedule import Schedule, Step
from diffinv.sampler.update import update

def selection(value: int | tuple[int, ...]) -> slice:
    """An `average` option (checked by the `ReNoise` configuration) as a slice over the estimates: a count n
    is the last n, a pair [start, stop) those estimates."""
    return slice(-value, None) if isinstance(value, int) else slice(value[0], value[1])


def mean(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The mean of the tensors (the tensor itself when there is one, bit for bit)."""
    return tensors[0] if len(tensors) == 1 else torch.stack(tensors).mean(dim=0)


class ReNoiseStep:
    """`InverseStep` of ReNoise: K renoising iterations of the explicit step, then the mean of chosen estimates.

    Built by the `diffinv.inversion.methods.ReNoise` configuration, which checks the values."""

    def __init__(self, renoise_steps: int, average: int | tuple[int, ...], early_timestep: int, early_renoise_steps: int,
                 early_average: int | tuple[int, ...], anderson: int, regularization: "NoiseRegularization | None") -> None:
        self.renoise_steps, self.early_renoise_steps, self.early_timestep = renoise_steps, early_renoise_steps, early_timestep
        self.average, self.early_average = selection(average), selection(early_average)
        self.anderson = anderson
        self.regularization = regularization

    def prepare(self, denoiser: Denoiser, schedule: Schedule, latent: torch.Tensor) -> None:
        """Keep z_0 and draw the fixed noise of the KL reference (only with noise regularization)."""
        if self.regularization is not None:
            self.regularization.reset(latent)

    def plan(self, timestep: int) -> tuple[int, slice]:
        """(renoising iterations, which estimates to average) at a step whose network sees `timestep`."""
        if timestep < self.early_timestep:
            return min(self.renoise_steps, self.early_renoise_steps), self.early_average
        return self.renoise_steps, self.average

    def __call__(
        self, denoiser: Denoiser, x: torch.Tensor, step: Step, history: list, position: int
    ) -> StepOutcome:
        """K renoising iterations of one inverse step (any sampler's), then the mean of the chosen estimates."""
        if self.regularization is not None and step.stepper is not None:
            raise ValueError("ReNoise's noise regularization needs a single-call sampler (ddim, euler, dpm++, flow-euler)")
        iterations, chosen = self.plan(step.timestep)
        picked = range(iterations + 1)[chosen] or range(iterations, iterations + 1)
        regularization = self.regularization
        reference = regularization.reference(denoiser, step) if regularization is not None else None
        latents: list[torch.Tensor] = []
        data: list[torch.Tensor] = []
        records: list = []

        def renoise(estimate: torch.Tensor) -> torch.Tensor:
            latent, prediction, record = inverse_step(denoiser, x, step, history, evaluate_at=estimate)
            records.append(record)
            if regularization is not None and len(latents) >= picked[0]:
                noise = regularization(prediction.noise, reference)
                prediction = predict(noise, x, step.start, "epsilon")
                latent = update(prediction, step.start, step.end, history)
            latents.append(latent)
            data.append(prediction.data)
            return latent

        # The first evaluation is at x itself (the naive step); each later one at the previous estimate.
        run = fixed_point(renoise, x, iterations + 1, anderson=self.anderson, keep_iterates=False)
        if len(latents) < iterations + 1:  # the loop's divergence guard stopped it: the last estimate shows why
            picked = range(len(latents) - 1, len(latents))
        return StepOutcome(
            latent=mean([latents[i] for i in picked]),
            data_prediction=mean([data[i] for i in picked]),
            record=records[picked[-1]],
            # ||f(z) - z|| / ||z|| at the last iterate z: how far the iteration is from its fixed point.
            residual=run.residuals[-1] if iterations else None,
        )


def autocorrelation_loss(noise: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Sum over latents, channels and scales (halving down to 8 pixels) of the squared mean products of the
    noise with itself rolled by a random shift along each axis: zero for white noise."""
    loss = noise.new_zeros(())
    level = noise.flatten(0, 1)[:, None]  # [B*C, 1, H, W]
    while True:
        shift = int(torch.randint(0, max(1, level.shape[-1] // 2), (1,), generator=generator))
        loss = loss + (level * level.roll(shift, dims=-1)).mean(dim=(1, 2, 3)).pow(2).sum()
        loss = loss + (level * level.roll(shift, dims=-2)).mean(dim=(1, 2, 3)).pow(2).sum()
        if level.shape[-1] <= 8 or level.shape[-2] <= 8:
            return loss
        level = F.avg_pool2d(level, kernel_size=2)


def patch_kl_divergence(noise: torch.Tensor, reference: torch.Tensor, patch: int = 4) -> torch.Tensor:
    """Sum over 4x4 patches and channels of |KL| between Gaussians fitted to `noise` and to `reference` there."""

    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = x.unfold(2, patch, patch).unfold(3, patch, patch).flatten(-2)  # [B, C, h, w, patch^2]
        return patches.mean(dim=-1), patches.var(dim=-1)

    (mu0, var0), (mu1, var1) = stats(noise), stats(reference)
    eps = 1e-6
    kl = torch.log((var1 + eps) / (var0 + eps)) + (var0 + (mu0 - mu1) ** 2) / (var1 + eps) - 1
    return kl.abs().sum()


class NoiseRegularization:
    """The paper's noise regularization of a noise prediction (see the module docstring)."""

    def __init__(self, lambda_kl: float, lambda_ac: float, steps: int, rolls: int, seed: int) -> None:
        self.lambda_kl, self.lambda_ac, self.steps, self.rolls, self.seed = lambda_kl, lambda_ac, steps, rolls, seed
        self.latent: torch.Tensor | None = None
        self.noise: torch.Tensor | None = None
        self.generator = torch.Generator().manual_seed(seed)

    def reset(self, latent: torch.Tensor) -> None:
        """Start a run from z_0 = `latent`: fresh seeded reference noise and roll shifts."""
        self.generator = torch.Generator().manual_seed(self.seed)
        self.latent = latent
        self.noise = torch.randn(latent.shape, generator=self.generator).to(latent.device, latent.dtype)

    def reference(self, denoiser: Denoiser, step: Step) -> torch.Tensor:
        """The network's noise prediction at z_0 forward-noised to the step's (noisier) end level."""
        if self.latent is None or self.noise is None:
            raise RuntimeError("ReNoiseStep.prepare() must run before the steps (run it through invert_sampler)")
        noisy = step.end.alpha * self.latent + step.end.sigma * self.noise
        return denoiser.predict(noisy, step.timestep, step.end).noise

    def __call__(self, noise: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(False), torch.enable_grad():
            noise, reference = noise.detach().clone(), reference.detach().clone()
            for _ in range(self.steps):
                if self.lambda_kl > 0:
                    variable = noise.requires_grad_(True)
                    (grad,) = torch.autograd.grad(patch_kl_divergence(variable, reference), variable)
                    noise = (variable - self.lambda_kl * grad.clamp(-100, 100)).detach()
                if self.lambda_ac > 0:
                    for _ in range(self.rolls):
                        variable = noise.requires_grad_(True)
                        (grad,) = torch.autograd.grad(autocorrelation_loss(variable, self.generator), variable)
                        noise = (variable - self.lambda_ac * grad / self.rolls).detach()
        return noise
