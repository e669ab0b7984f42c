"""``heun`` (diffusers' `HeunDiscreteScheduler`) and ``flow-heun`` (`FlowMatchHeunDiscreteScheduler`, SD3, Flux).

Heun's method in the scheduler's own coordinates: y = z / alpha against s = sigma / alpha for diffusion
models (the sigma parametrisation, derivative eps), y = z against s = sigma on the flow path (derivative
v = eps - x0). A step calls the network at its start, takes the Euler step to the end level, calls the
network there (at the next step's timestep) and steps from the start with the mean of the two
derivatives: 2 calls a step. The last step, to sigma 0, is the Euler step alone, as in diffusers (2N - 1
calls for N steps). Run backwards (naive inversion) it is Heun's method towards noise: the first call at
the known latent with the timestep of its level, the second at the Euler point it reaches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import FlowMatchHeunDiscreteScheduler, HeunDiscreteScheduler

from diffinv.models.prediction import NoiseLevel, Prediction
from diffinv.sampler.registry import Sampler
from diffinv.sampler.schedule import Step, network_timestep, sigma_point
from diffinv.sampler.update import Record, evaluate


class Heun:
    """The Heun stepper; `step.extra` is (the timestep of the second call,) or () for an Euler-only step."""

    def __init__(self, flow: bool) -> None:
        self.flow = flow

    def scale(self, point: NoiseLevel) -> float:
        """z = scale * y."""
        return 1.0 if self.flow else point.alpha

    def level(self, point: NoiseLevel) -> float:
        """The integration variable s."""
        return point.sigma if self.flow else point.sigma / point.alpha

    def derivative(self, prediction: Prediction) -> torch.Tensor:
        """dy/ds at a prediction: v = eps - x0 on the flow path, eps in the sigma parametrisation."""
        return prediction.noise - prediction.data if self.flow else prediction.noise

    def step(self, denoiser: Any, x: torch.Tensor, step: Step, memory: Sequence[Record]) -> tuple[torch.Tensor, Record]:
        record = evaluate(denoiser, x, step.timestep, step.start)
        y, ds = x / self.scale(step.start), self.level(step.end) - self.level(step.start)
        first = self.derivative(record.prediction)
        euler = (y + ds * first) * self.scale(step.end)
        if not step.extra:
            return euler, record
        second = self.derivative(evaluate(denoiser, euler, step.extra[0], step.end).prediction)
        return (y + ds * ((first + second) / 2)) * self.scale(step.end), record

    def reverse(self, step: Step, backward: Step) -> Step:
        """Heun towards noise: first call at the step's end (its own timestep when it has one), second at its start."""
        if not step.extra:
            return backward
        return Step(step.index, step.extra[0], step.end, step.start, step.order, (), (step.timestep,), self)


HEUN, FLOW_HEUN = Heun(flow=False), Heun(flow=True)


def _heun_steps(scheduler, flow: bool) -> list[Step]:
    """N steps from the scheduler's interleaved sigmas (2N) and timesteps (2N - 1)."""
    sigmas = [float(s) for s in scheduler.sigmas.double()]
    timesteps = [network_timestep(t) for t in scheduler.timesteps]
    levels = [sigmas[0]] + sigmas[1:-1:2] + [sigmas[-1]]
    times = [timesteps[0]] + timesteps[1::2]
    points = [NoiseLevel(alpha=1.0 - s, sigma=s) if flow else sigma_point(s) for s in levels]
    stepper = FLOW_HEUN if flow else HEUN
    count = len(times)
    return [Step(index, times[index], points[index], points[index + 1], 1, (),
                 (times[index + 1],) if index + 1 < count else (), stepper) for index in range(count)]


def heun_steps(scheduler: HeunDiscreteScheduler, num_steps: int) -> list[Step]:
    """Heun's steps on the variance-preserving levels of its sigmas."""
    config = scheduler.config
    if config.clip_sample or config.get("use_exponential_sigmas", False) or config.get("use_beta_sigmas", False):
        raise ValueError("Heun with clip_sample, exponential or beta sigmas is not supported")
    if config.prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"Heun supports epsilon and v_prediction, not {config.prediction_type!r}")
    return _heun_steps(scheduler, flow=False)


def flow_heun_steps(scheduler: FlowMatchHeunDiscreteScheduler, num_steps: int) -> list[Step]:
    """Flow Heun's steps on the straight path's levels (1 - sigma, sigma)."""
    return _heun_steps(scheduler, flow=True)


HEUN_SAMPLER = Sampler("heun", HeunDiscreteScheduler, heun_steps, sigma_scaled=True, description="Heun, 2 network calls a step")
FLOW_HEUN_SAMPLER = Sampler("flow-heun", FlowMatchHeunDiscreteScheduler, flow_heun_steps, flow=True,
                            description="flow-matching Heun (SD3, Flux), 2 network calls a step")
