"""``pndm``: diffusers' `PNDMScheduler` with ``skip_prk_steps`` (PLMS), Stable Diffusion 1.x folders' scheduler.

Each step is the DDIM transfer from `start` to `end` with eps replaced by an Adams-Bashforth combination of
the raw network outputs of this step and up to three earlier ones (weights 1; 3/2, -1/2; 23/12, -16/12,
5/12; 55/24, -59/24, 37/24, -9/24), converted to eps at the step's latent (v-prediction included). The
first step has no history and calls the network twice: at x_T, then at the DDIM point it reaches, and
steps from x_T with the mean of the two outputs (a trapezoid step). Its second call is not remembered:
the later steps combine the first call's output, as diffusers does. Levels follow diffusers'
`_get_prev_sample`: alphas_cumprod at the timestep and at timestep - num_train_timesteps // steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import PNDMScheduler

from diffinv.models.prediction import NoiseLevel, predict
from diffinv.sampler.registry import Sampler
from diffinv.sampler.schedule import Step, alphas_cumprod_point
from diffinv.sampler.update import Record, evaluate

#: Adams-Bashforth weights on [this output, previous, ...] by the number of outputs combined.
WEIGHTS = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def transfer(x: torch.Tensor, eps: torch.Tensor, start: NoiseLevel, end: NoiseLevel) -> torch.Tensor:
    """The DDIM transfer of `x` from `start` to `end` with noise `eps` (PNDM's formula (9), rewritten)."""
    return end.alpha * (x - start.sigma * eps) / start.alpha + end.sigma * eps


class PLMS:
    """The PNDM (PLMS) stepper. `step.extra` of the first step: (second call's timestep, the level the first
    call's DDIM point lands at, the level the trapezoid step starts from)."""

    def step(self, denoiser: Any, x: torch.Tensor, step: Step, memory: Sequence[Record]) -> tuple[torch.Tensor, Record]:
        record = evaluate(denoiser, x, step.timestep, step.start)
        if step.extra:
            second_timestep, middle, start = step.extra
            x_middle = transfer(x, record.prediction.noise, step.start, middle)
            combined = (denoiser.output(x_middle, second_timestep) + record.output) / 2
        else:
            start = step.start
            outputs = [record.output] + [earlier.output for earlier in memory[: step.order - 1]]
            weights = WEIGHTS[len(outputs)]
            combined = weights[0] * outputs[0]
            for weight, output in zip(weights[1:], outputs[1:]):
                combined = combined + weight * output
        eps = predict(combined, x, start, denoiser.prediction_type).noise
        return transfer(x, eps, start, step.end), record

    def reverse(self, step: Step, backward: Step) -> Step:
        """The first step run backwards: the first call at its end (its own timestep), the second at its start."""
        if not step.extra:
            return backward
        second_timestep, _, _ = step.extra
        return Step(step.index, second_timestep, step.end, step.start, 1, (), (step.timestep, step.start, step.end), self)


PLMS_STEPPER = PLMS()


def pndm_steps(scheduler: PNDMScheduler, num_steps: int) -> list[Step]:
    """PLMS steps from the scheduler's `plms_timesteps` (N + 1 network calls for N steps)."""
    config = scheduler.config
    if not config.skip_prk_steps:
        raise ValueError("PNDM's Runge-Kutta warm-up (skip_prk_steps=False) is not supported; set skip_prk_steps=True")
    if config.prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"PNDM supports epsilon and v_prediction, not {config.prediction_type!r}")
    alphas_cumprod = scheduler.alphas_cumprod.double().numpy()
    final = float(scheduler.final_alpha_cumprod)
    stride = config.num_train_timesteps // num_steps

    def level(timestep: int) -> NoiseLevel:
        return alphas_cumprod_point(alphas_cumprod[timestep] if timestep >= 0 else final)

    timesteps = [int(t) for t in scheduler.timesteps]
    if num_steps == 1:
        return [Step(0, timesteps[0], level(timesteps[0]), level(timesteps[0] - stride), 1, (), (), PLMS_STEPPER)]
    first, second = timesteps[0], timesteps[1]
    steps = [Step(0, first, level(first), level(second), 1, (), (second, level(first - stride), level(second + stride)), PLMS_STEPPER)]
    for index, timestep in enumerate(timesteps[2:], start=1):
        order = min(index + 1, 4)
        history = tuple(steps[index - back].start for back in range(1, order))
        steps.append(Step(index, timestep, level(timestep), level(timestep - stride), order, history, (), PLMS_STEPPER))
    return steps


PNDM = Sampler("pndm", PNDMScheduler, pndm_steps, options={"skip_prk_steps": True},
               matches=lambda config: bool(config.get("skip_prk_steps", False)), description="PNDM/PLMS (SD 1.x folders' default)")
