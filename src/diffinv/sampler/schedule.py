"""Noise schedules of the supported samplers, read from a diffusers scheduler config.

A `Schedule` is the list of denoising steps a sampler takes: for each, the timestep the network sees,
the (alpha, sigma) of the latent it starts from and of the latent it produces, and the solver order
it uses. Timesteps and sigmas come from diffusers' own schedulers (`set_timesteps`), so every spacing
diffusers offers ("leading" with steps_offset, "linspace", "trailing") matches by construction; the
update math lives in `diffinv.sampler.solvers`.

Names: ``ddim`` (DDIM, eta 0), ``euler`` (diffusers' `EulerDiscreteScheduler`, SDXL's default: DDIM
in the sigma parametrisation, on the Euler scheduler's own timesteps and sigmas, Karras sigmas
included) and ``dpm++1``, ``dpm++2m``, ``dpm++3m`` (DPM-Solver++ multistep of order 1, 2, 3,
``algorithm_type="dpmsolver++"`` with the config's ``lower_order_final`` and ``final_sigmas_type``).
Every sampler works on variance-preserving latents; a sigma-parametrised scheduler's x = z / alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from diffinv.models.prediction import PREDICTION_TYPES, Point

#: Scheduler name -> DPM-Solver++ order (None for the first-order DDIM and Euler).
SCHEDULERS: dict[str, int | None] = {"ddim": None, "euler": None, "dpm++1": 1, "dpm++2m": 2, "dpm++3m": 3}


@dataclass(frozen=True)
class Step:
    """One sampling step: the network sees `timestep` at `start`; the step lands at `end`.

    `order` is the solver order used; `history` are the noise levels of the earlier steps whose data
    predictions the multistep update reuses, most recent first (len(history) == order - 1).
    """

    index: int
    timestep: int | float  # what the network sees (Euler's interpolated timesteps can be fractional)
    start: Point
    end: Point
    order: int
    history: tuple[Point, ...] = ()


@dataclass(frozen=True)
class Schedule:
    """The steps of one sampler at one number of steps, plus the config facts the math needs."""

    name: str
    steps: tuple[Step, ...]
    prediction_type: str
    init_noise_sigma: float = 1.0

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def timesteps(self) -> list[int | float]:
        return [step.timestep for step in self.steps]


def check_scheduler_name(name: str) -> str:
    """Return `name` if it is a supported scheduler, else raise a ValueError listing the choices."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    return name


def diffusers_scheduler(name: str, config) -> DDIMScheduler | EulerDiscreteScheduler | DPMSolverMultistepScheduler:
    """The diffusers scheduler a user would swap in for `name`, built from a pipeline's scheduler config."""
    order = SCHEDULERS[check_scheduler_name(name)]
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config)
    if order is None:
        return DDIMScheduler.from_config(config)
    return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=order)


def _alphas_cumprod_point(alpha_cumprod: float) -> Point:
    return Point(alpha=math.sqrt(alpha_cumprod), sigma=math.sqrt(1.0 - alpha_cumprod))


def _ddim_steps(scheduler: DDIMScheduler, num_steps: int) -> list[Step]:
    config = scheduler.config
    if config.clip_sample or config.thresholding:
        raise ValueError("DDIM with clip_sample or thresholding is not invertible; set both to False")
    alphas_cumprod = scheduler.alphas_cumprod.double().numpy()
    stride = config.num_train_timesteps // num_steps
    steps = []
    for index, timestep in enumerate(int(t) for t in scheduler.timesteps):
        previous = timestep - stride
        end = alphas_cumprod[previous] if previous >= 0 else float(scheduler.final_alpha_cumprod)
        steps.append(Step(index, timestep, _alphas_cumprod_point(alphas_cumprod[timestep]), _alphas_cumprod_point(end), 1))
    return steps


def _sigma_point(sigma: float) -> Point:
    """The variance-preserving level of a sigma-parametrised one (x = z / alpha, sigma = sigma_vp / alpha)."""
    alpha = 1.0 / math.sqrt(sigma**2 + 1.0)
    return Point(alpha=alpha, sigma=float(sigma) * alpha)


def _network_timestep(value) -> int | float:
    value = float(value)
    return int(value) if value.is_integer() else value


def _euler_steps(scheduler: EulerDiscreteScheduler) -> list[Step]:
    config = scheduler.config
    if getattr(config, "use_exponential_sigmas", False) or getattr(config, "use_beta_sigmas", False):
        raise ValueError("Euler with exponential or beta sigmas is not supported; use the default or Karras sigmas")
    points = [_sigma_point(sigma) for sigma in scheduler.sigmas.double().numpy()]
    return [Step(index, _network_timestep(t), points[index], points[index + 1], 1) for index, t in enumerate(scheduler.timesteps)]


def _dpm_order(index: int, num_steps: int, solver_order: int, config) -> int:
    """The order diffusers' DPMSolverMultistepScheduler.step uses at step `index` (same rules)."""
    lower_order_final = index == num_steps - 1 and (
        config.euler_at_final or (config.lower_order_final and num_steps < 15) or config.final_sigmas_type == "zero"
    )
    lower_order_second = index == num_steps - 2 and config.lower_order_final and num_steps < 15
    warm_up = min(index, solver_order)  # diffusers' lower_order_nums
    if solver_order == 1 or warm_up < 1 or lower_order_final:
        return 1
    if solver_order == 2 or warm_up < 2 or lower_order_second:
        return 2
    return 3


def _dpm_steps(scheduler: DPMSolverMultistepScheduler, num_steps: int) -> list[Step]:
    config = scheduler.config
    if config.thresholding or config.solver_type != "midpoint" or config.variance_type is not None:
        raise ValueError("only DPM-Solver++ with solver_type='midpoint', no thresholding, no learned variance is supported")
    if config.use_flow_sigmas:
        raise ValueError("flow-matching sigmas are not supported yet")
    points = [_sigma_point(sigma) for sigma in scheduler.sigmas.double().numpy()]
    steps = []
    timesteps = [int(t) for t in scheduler.timesteps]
    for index, timestep in enumerate(timesteps):
        order = _dpm_order(index, len(timesteps), config.solver_order, config)
        history = tuple(points[index - back] for back in range(1, order))
        steps.append(Step(index, timestep, points[index], points[index + 1], order, history))
    return steps


def make_schedule(name: str, config, num_steps: int) -> Schedule:
    """The schedule of sampler `name` at `num_steps` steps for a pipeline's scheduler `config`."""
    if num_steps < 1:
        raise ValueError(f"steps must be at least 1, got {num_steps}")
    scheduler = diffusers_scheduler(name, config)
    if scheduler.config.prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unsupported prediction_type {scheduler.config.prediction_type!r}")
    scheduler.set_timesteps(num_steps)
    init_noise_sigma = float(np.asarray(scheduler.init_noise_sigma))
    if isinstance(scheduler, DDIMScheduler):
        steps = _ddim_steps(scheduler, num_steps)
    elif isinstance(scheduler, EulerDiscreteScheduler):
        steps = _euler_steps(scheduler)
        init_noise_sigma *= steps[0].start.alpha  # diffusers starts at x = noise * init, here z = alpha x
    else:
        steps = _dpm_steps(scheduler, num_steps)
    return Schedule(name=name, steps=tuple(steps), prediction_type=scheduler.config.prediction_type,
                    init_noise_sigma=init_noise_sigma)


def reverse(schedule: Schedule) -> tuple[Step, ...]:
    """The inverse steps, z_0 -> z_T: sampling step k run backwards, last sampling step first.

    Inverse step k starts at sampling step k's end, lands at its start, shows the network the same
    timestep, and keeps the sampling step's order; its multistep history is the levels the earlier
    inverse steps started from (the ends of sampling steps k+1, k+2), most recent first.
    """
    steps = schedule.steps
    inverse = []
    for step in reversed(steps):
        later = steps[step.index + 1 : step.index + step.order]
        history = tuple(later_step.end for later_step in later)
        inverse.append(Step(step.index, step.timestep, step.end, step.start, step.order, history))
    return tuple(inverse)
