"""Noise schedules of the supported samplers, read from a diffusers scheduler config.

A `Schedule` is the list of denoising steps a sampler takes: for each, the timestep the network sees,
the (alpha, sigma) of the latent it starts from and of the latent it produces, and the solver order
it uses. Timesteps and sigmas come from diffusers' own schedulers (`set_timesteps`), so every spacing
diffusers offers ("leading" with steps_offset, "linspace", "trailing") matches by construction; the
update math lives in `diffinv.sampler.solvers`.

Names: ``ddim`` (DDIM, eta 0), ``euler`` (diffusers' `EulerDiscreteScheduler`, SDXL's default: DDIM
in the sigma parametrisation, on the Euler scheduler's own timesteps and sigmas, Karras sigmas
included) and ``dpm++1``, ``dpm++2m``, ``dpm++3m`` (DPM-Solver++ multistep of order 1, 2, 3,
``algorithm_type="dpmsolver++"`` with the config's ``lower_order_final`` and ``final_sigmas_type``)
on variance-preserving latents (a sigma-parametrised scheduler's x = z / alpha), and ``flow-euler``
(diffusers' `FlowMatchEulerDiscreteScheduler`, SD3's and Flux's) on the straight path of flow matching,
x = (1 - sigma) x0 + sigma eps: its Euler step x + (sigma_end - sigma_start) v is the DDIM update on those
levels, so it shares the solver, and every inversion method, with the others. The flow scheduler's shifted
sigmas come from diffusers (the config's `shift`, or dynamic shifting by the image's token count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
)

from diffinv.models.prediction import PREDICTION_TYPES, Point

#: Scheduler name -> DPM-Solver++ order (None for the first-order DDIM, Euler and flow Euler).
SCHEDULERS: dict[str, int | None] = {"ddim": None, "euler": None, "dpm++1": 1, "dpm++2m": 2, "dpm++3m": 3, "flow-euler": None}
#: The samplers of flow-matching models (velocity prediction on x = (1 - sigma) x0 + sigma eps).
FLOW_SCHEDULERS = ("flow-euler",)
#: The samplers of diffusion (variance-preserving) models.
DIFFUSION_SCHEDULERS = tuple(name for name in SCHEDULERS if name not in FLOW_SCHEDULERS)


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


def check_scheduler_name(name: str | None) -> str | None:
    """Return `name` if it is a supported scheduler (None: the model's default), else raise a ValueError."""
    if name is not None and name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    return name


def parse_schedulers(text: str) -> list[tuple[str, int]]:
    """``"ddim:50,dpm++2m:10"`` -> [("ddim", 50), ("dpm++2m", 10)]."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, steps = item.partition(":")
        if not sep or not steps.strip().isdigit():
            raise ValueError(f"scheduler {item!r} is not NAME:STEPS (e.g. ddim:50)")
        pairs.append((check_scheduler_name(name.strip()), int(steps)))
    if not pairs:
        raise ValueError("no scheduler given")
    return pairs


def is_flow_config(config) -> bool:
    """Whether a scheduler config is a flow-matching one (a `shift`, no beta schedule), as SD3's and Flux's are."""
    return "shift" in config and "beta_start" not in config


def default_scheduler(config) -> str:
    """The sampler a model uses unless told otherwise: flow-euler on flow-matching models, else ddim."""
    return "flow-euler" if is_flow_config(config) else "ddim"


def resolve_scheduler(name: str | None, config) -> str:
    """`name` (or the model's default when None), refused with a one-line error if the model cannot use it."""
    name = check_scheduler_name(name) or default_scheduler(config)
    flow_model, flow_sampler = is_flow_config(config), name in FLOW_SCHEDULERS
    if flow_model != flow_sampler:
        usable = FLOW_SCHEDULERS if flow_model else DIFFUSION_SCHEDULERS
        kind = "a flow-matching" if flow_model else "a diffusion (noise-prediction)"
        raise ValueError(f"scheduler {name!r} does not fit {kind} model; choose one of {', '.join(usable)}")
    return name


def diffusers_scheduler(name: str, config):
    """The diffusers scheduler a user would swap in for `name`, built from a pipeline's scheduler config."""
    order = SCHEDULERS[check_scheduler_name(name)]
    if name == "flow-euler":
        return FlowMatchEulerDiscreteScheduler.from_config(config)
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


def dynamic_shift(config, image_seq_len: int) -> float:
    """The flow scheduler's mu for an image of `image_seq_len` transformer tokens: linear from base_shift at
    base_image_seq_len to max_shift at max_image_seq_len, as the SD3 and Flux pipelines compute it."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + base_shift - slope * base_len


def _flow_steps(scheduler: FlowMatchEulerDiscreteScheduler) -> list[Step]:
    config = scheduler.config
    if config.get("stochastic_sampling", False) or config.get("invert_sigmas", False):
        raise ValueError("flow matching with stochastic sampling or inverted sigmas is not invertible; set both to False")
    points = [Point(alpha=1.0 - float(sigma), sigma=float(sigma)) for sigma in scheduler.sigmas.double().numpy()]
    return [Step(index, _network_timestep(t), points[index], points[index + 1], 1) for index, t in enumerate(scheduler.timesteps)]


def make_schedule(name: str | None, config, num_steps: int, image_seq_len: int | None = None,
                  sigmas: list[float] | None = None) -> Schedule:
    """The schedule of sampler `name` (None: the model's default) at `num_steps` steps for a pipeline's
    scheduler `config`. A flow scheduler with dynamic shifting needs the image's transformer token count
    `image_seq_len` (the pipelines pass it; `diffinv.pipeline` computes it from the latent size); `sigmas`
    are the unshifted flow sigmas a pipeline passes itself (Flux), before the scheduler shifts them."""
    if num_steps < 1:
        raise ValueError(f"steps must be at least 1, got {num_steps}")
    name = resolve_scheduler(name, config)
    scheduler = diffusers_scheduler(name, config)
    if sigmas is not None and not isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        raise ValueError("custom sigmas are for flow-matching schedulers only")
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        shift: dict = {}
        if scheduler.config.use_dynamic_shifting:
            if image_seq_len is None:
                raise ValueError("this flow scheduler shifts its sigmas by image size; pass image_seq_len")
            shift["mu"] = dynamic_shift(scheduler.config, image_seq_len)
        if sigmas is not None:
            shift["sigmas"] = list(sigmas)
        scheduler.set_timesteps(None if sigmas is not None else num_steps, **shift)
        return Schedule(name=name, steps=tuple(_flow_steps(scheduler)), prediction_type="flow", init_noise_sigma=1.0)
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
