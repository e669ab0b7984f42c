"""One inverse step as an equation: Phi(z) = x_t, Phi being the sampling step with the network at z.

Shared by the exact (forward-step, gradient, Levenberg-Marquardt) and fixed-point iterations of
`diffinv.inversion.exact`, and by the training probe that reads a step's full Jacobian.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.autograd import forward_ad
from torch.nn.attention import SDPBackend, sdpa_kernel

from diffinv.inversion.iteration import Evaluation, per_latent_norm
from diffinv.models.denoiser import Denoiser
from diffinv.models.prediction import NoiseLevel, Prediction, predict
from diffinv.sampler.sampling import run_step
from diffinv.sampler.schedule import Step
from diffinv.sampler.update import Record, update


@contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Parameters of `module` not requiring grad inside the block (gradients flow only to the input)."""
    flags = [(parameter, parameter.requires_grad) for parameter in module.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def level_at(log_snr: float) -> NoiseLevel:
    """The variance-preserving noise level with log(alpha / sigma) = `log_snr`."""
    return NoiseLevel(alpha=math.sqrt(1.0 / (1.0 + math.exp(-2.0 * log_snr))), sigma=math.sqrt(1.0 / (1.0 + math.exp(2.0 * log_snr))))


class _ZeroNetwork:
    """A network whose output is 0 everywhere: what is left of a step is its part linear in the latent."""

    def __init__(self, prediction_type: str) -> None:
        self.prediction_type = prediction_type

    def output(self, x: torch.Tensor, timestep: int | float) -> torch.Tensor:
        return torch.zeros_like(x)


@dataclass
class StepProblem:
    """Phi(z) = x_t for one sampling step: the forward update with the network at z, plus a fixed correction.

    For a sampler with its own stepper, Phi is that stepper's step from z, with every network call the step
    makes (Heun's second call, PNDM's first-step pair, UniPC's corrector), reading the fixed `memory` (the
    earlier sampling steps' records); the iterate's extra is then the step's record."""

    denoiser: Denoiser
    forward: Step
    target: torch.Tensor
    correction: torch.Tensor | None = None
    history: tuple[tuple[NoiseLevel, torch.Tensor], ...] = ()
    memory: tuple[Record, ...] = ()

    def phi(self, z: torch.Tensor) -> tuple[torch.Tensor, Prediction]:
        """The sampling step applied to z: network at z, earlier data predictions from `history`, plus
        the fixed `correction` if any."""
        image, extra = self.phi_extra(z)
        return image, (extra.prediction if isinstance(extra, Record) else extra)

    def phi_extra(self, z: torch.Tensor) -> tuple[torch.Tensor, Prediction | Record]:
        """`phi`, with the step's record instead of the prediction for a sampler with its own stepper."""
        if self.forward.stepper is not None:
            return run_step(self.denoiser, z, self.forward, list(self.memory))
        prediction = self.denoiser.predict(z, self.forward.timestep, self.forward.start)
        image = update(prediction, self.forward.start, self.forward.end, self.history)
        return (image if self.correction is None else image + self.correction), prediction

    def kept(self, extra: Prediction | Record, detach: bool = False) -> torch.Tensor | Record:
        """What an evaluation keeps of the step: the data prediction, or the whole record of a stepper's step."""
        if isinstance(extra, Record):
            if not detach:
                return extra
            return Record(extra.point, extra.output.detach(), Prediction(extra.data.detach(), extra.prediction.noise.detach()),
                          None if extra.latent is None else extra.latent.detach(), extra.order)
        return extra.data.detach() if detach else extra.data

    def relative(self, difference: torch.Tensor) -> torch.Tensor:
        return per_latent_norm(difference) / per_latent_norm(self.target).clamp_min(1e-12)

    def forward_step(self, z: torch.Tensor) -> Evaluation:
        """Direction Phi(z) - x_t (forward step method and fixed-point iteration)."""
        image, extra = self.phi_extra(z)
        difference = image - self.target
        return Evaluation(direction=difference, residual=self.relative(difference), extra=self.kept(extra))

    def gradient(self, z: torch.Tensor) -> Evaluation:
        """Direction J_Phi(z)^T (Phi(z) - x_t), the gradient of ||Phi(z) - x_t||^2 / 2 (one backward pass)."""
        with torch.inference_mode(False), torch.enable_grad(), frozen(self.denoiser.network):
            variable = z.clone().requires_grad_(True)
            image, extra = self.phi_extra(variable)
            difference = (image - self.target).detach()
            (grad,) = torch.autograd.grad(image, variable, grad_outputs=difference)
        return Evaluation(direction=grad.detach(), residual=self.relative(difference), extra=self.kept(extra, detach=True))

    def residual(self, z: torch.Tensor) -> torch.Tensor:
        """Phi(z) - x_t."""
        return self.phi(z)[0] - self.target

    def linearize(self, z: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
        """Products with the Jacobian of Phi at z: (v -> J v, u -> J^T u), for Levenberg-Marquardt.

        J v is one forward-mode pass through the UNet (PyTorch has no forward-mode rule for its fused
        CPU attention kernels, so attention runs on the math backend there); J^T u is a backward pass
        on a graph built once here. Every product counts as one network call in the denoiser's NFE.
        """
        with torch.inference_mode(False), torch.enable_grad(), frozen(self.denoiser.network):
            variable = z.clone().requires_grad_(True)
            image, _ = self.phi(variable)

        def jvp(v: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(False), torch.no_grad(), sdpa_kernel(SDPBackend.MATH), forward_ad.dual_level():
                out, _ = self.phi(forward_ad.make_dual(z.clone(), v))  # clone: a dual cannot wrap an inference tensor
                return forward_ad.unpack_dual(out).tangent.detach()

        def vjp(u: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(False):
                (grad,) = torch.autograd.grad(image, variable, grad_outputs=u, retain_graph=True)
            self.denoiser.nfe += 1
            return grad.detach()

        return jvp, vjp

    def jacobian(self, z: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """The full Jacobian of Phi at z, [B, n, n] for B latents of n entries (latents do not interact).

        Column j comes from one forward-mode pass with tangent e_j in every latent; `chunk` columns go
        through the UNet as one batch (the latents repeated, the prompt embeddings alike). Each column
        counts as one network call.
        """
        batch, n = z.shape[0], z[0].numel()
        columns = []
        for first in range(0, n, chunk):
            count = min(chunk, n - first)
            tangent = torch.zeros(count, batch, n, dtype=z.dtype, device=z.device)
            tangent[torch.arange(count), :, torch.arange(first, first + count)] = 1.0
            problem = self.repeated(count)
            with torch.inference_mode(False), torch.no_grad(), sdpa_kernel(SDPBackend.MATH), forward_ad.dual_level():
                dual = forward_ad.make_dual(z.repeat(count, 1, 1, 1).clone(), tangent.view(count * batch, *z.shape[1:]))
                out, _ = problem.phi(dual)
                columns.append(forward_ad.unpack_dual(out).tangent.detach().view(count, batch, n))
            self.denoiser.nfe += count
        return torch.cat(columns).permute(1, 2, 0)  # [B, n (output), n (input)]

    def repeated(self, count: int) -> "StepProblem":
        """The same step for the latents repeated `count` times (for batched Jacobian columns); its
        denoiser is `Denoiser.repeated`, whose network calls are not counted here."""
        denoiser = self.denoiser.repeated(count)

        def tile(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.repeat(count, *([1] * (tensor.ndim - 1)))

        history = tuple((point, tile(data)) for point, data in self.history)
        memory = tuple(record.tiled(count) for record in self.memory)
        return StepProblem(denoiser, self.forward, tile(self.target), tile(self.correction), history, memory)

    def linear_coefficient(self) -> float:
        """The coefficient a of z in Phi(z) = a z + (terms in the network output), read off `update` (or the
        stepper's step with a network that outputs 0: the earlier steps' terms cancel in the difference)."""
        kind = self.denoiser.prediction_type
        start, end = self.forward.start, self.forward.end
        if self.forward.stepper is not None:
            zero = _ZeroNetwork(kind)
            memory = list(self.memory)
            ones, zeros = torch.ones_like(self.target), torch.zeros_like(self.target)
            difference = run_step(zero, ones, self.forward, memory)[0] - run_step(zero, zeros, self.forward, memory)[0]
            return float(difference.mean())
        zero, one = torch.zeros(1), torch.ones(1)
        return float(update(predict(zero, one, start, kind), start, end) - update(predict(zero, zero, start, kind), start, end))
