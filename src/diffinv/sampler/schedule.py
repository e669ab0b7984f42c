"""Noise schedules of the registered samplers, read from a diffusers scheduler config.

A `Schedule` is the list of denoising steps a sampler takes: for each, the timestep the network sees,
the (alpha, sigma) of the latent it starts from and of the latent it produces, the solver order, the
levels of the earlier steps it reads, and how the step runs (`Step.stepper`; None is the shared
single-call update `update.update`). Timesteps and sigmas come from diffusers' own schedulers
(`set_timesteps`), so every spacing diffusers offers matches by construction.

The samplers themselves are one module each, registered by one line in `diffinv.sampler.registry`: `classic` (ddim, euler, dpm++1/2m/3m, flow-euler), `pndm`, `unipc`, `heun`
(heun, flow-heun) and `deis`. Diffusion samplers run on variance-preserving latents (a sigma-parametrised
scheduler's x = z / alpha); flow samplers on the straight path x = (1 - sigma) x0 + sigma eps. The flow
scheduler's shifted sigmas come from diffusers (the config's `shift`, or dynamic shifting by the image's
token count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffinv.models.prediction import PREDICTION_TYPES, NoiseLevel
from diffinv.sampler.registry import ENTRIES, STOCHASTIC, Sampler, get_sampler, sampler_names, samplers, stochastic_reason


@dataclass(frozen=True)
class Step:
    """One sampling step: the network sees `timestep` at `start`; the step lands at `end`.

    `order` is the solver order used; `history` are the noise levels of the earlier steps whose records the
    step reads, most recent first (len(history) == order - 1 for the single-call update). `extra` holds
    sampler-specific constants (a second evaluation's timestep, a corrector's order); `stepper` runs the step
    (None: `update.update` with the network called once at `start`).
    """

    index: int
    timestep: int | float  # what the network sees (Euler's interpolated timesteps can be fractional)
    start: NoiseLevel
    end: NoiseLevel
    order: int
    history: tuple[NoiseLevel, ...] = ()
    extra: tuple = ()
    stepper: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Schedule:
    """The steps of one sampler at one number of steps, plus the config facts the math needs.

    `note` says where the sampler came from when it was not named (the model folder's own, or the
    default instead of a scheduler diffinv does not have)."""

    name: str
    steps: tuple[Step, ...]
    prediction_type: str
    init_noise_sigma: float = 1.0
    note: str | None = None

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def timesteps(self) -> list[int | float]:
        return [step.timestep for step in self.steps]


def alphas_cumprod_point(alpha_cumprod: float) -> NoiseLevel:
    """The level of a DDPM-style alphas_cumprod value: (sqrt(a), sqrt(1 - a))."""
    return NoiseLevel(alpha=math.sqrt(alpha_cumprod), sigma=math.sqrt(1.0 - alpha_cumprod))


def sigma_point(sigma: float) -> NoiseLevel:
    """The variance-preserving level of a sigma-parametrised one (x = z / alpha, sigma = sigma_vp / alpha)."""
    alpha = 1.0 / math.sqrt(sigma**2 + 1.0)
    return NoiseLevel(alpha=alpha, sigma=float(sigma) * alpha)


def network_timestep(value) -> int | float:
    """A scheduler timestep as the network gets it: an int when it is whole, else the float."""
    value = float(value)
    return int(value) if value.is_integer() else value


def check_sampler_name(name: str | None) -> str | None:
    """Return `name` if it is a registered sampler (None: the model's default), else raise a one-line ValueError
    (saying why for a stochastic sampler)."""
    if name is not None and name not in ENTRIES:
        reason = stochastic_reason(name)
        if reason is not None:
            raise ValueError(f"{reason}; choose one of {', '.join(ENTRIES)}")
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(ENTRIES)}")
    return name


def parse_samplers(text: str) -> list[tuple[str, int]]:
    """``"ddim:50,dpm++2m:10"`` -> [("ddim", 50), ("dpm++2m", 10)]."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, steps = item.partition(":")
        if not sep or not steps.strip().isdigit():
            raise ValueError(f"sampler {item!r} is not NAME:STEPS (e.g. ddim:50)")
        pairs.append((check_sampler_name(name.strip()), int(steps)))
    if not pairs:
        raise ValueError("no sampler given")
    return pairs


def is_flow_config(config) -> bool:
    """Whether a scheduler config is a flow-matching one (a `shift`, no beta schedule), as SD3's and Flux's are."""
    return "shift" in config and "beta_start" not in config


def folder_scheduler(config) -> tuple[str | None, str | None]:
    """(the registered sampler a model folder's scheduler config names, or None; the config's class name)."""
    class_name = config.get("_class_name") if hasattr(config, "get") else None
    if class_name is None:
        return None, None
    for sampler in samplers().values():
        if sampler.scheduler_class.__name__ == class_name and sampler.matches(config):
            return sampler.name, class_name
    return None, class_name


def default_sampler(config) -> str:
    """The sampler a model uses unless told otherwise: the folder's own scheduler when diffinv has it, else
    flow-euler on flow-matching models and ddim on the others."""
    own, _ = folder_scheduler(config)
    if own is not None and get_sampler(own).flow == is_flow_config(config):
        return own
    return "flow-euler" if is_flow_config(config) else "ddim"


def default_note(config) -> str | None:
    """One line on the default sampler of a model whose folder names a scheduler (None if it names none)."""
    own, class_name = folder_scheduler(config)
    if class_name is None:
        return None
    chosen = default_sampler(config)
    if own == chosen:
        return f"sampler {chosen}: the model folder's own ({class_name})"
    if class_name in STOCHASTIC:
        reason = stochastic_reason(class_name)
    elif "sde" in str(config.get("algorithm_type", "")):  # DPMSolverMultistepScheduler's SDE variants
        reason = stochastic_reason("dpm++2m-sde")
    else:
        reason = None
    why = reason if reason is not None else f"diffinv does not have {class_name} with this config"
    return f"sampler {chosen}: the model folder names {class_name}, but {why}"


def resolve_sampler(name: str | None, config) -> str:
    """`name` (or the model's default when None), refused with a one-line error if the model cannot use it."""
    name = check_sampler_name(name) or default_sampler(config)
    flow_model, flow_sampler = is_flow_config(config), get_sampler(name).flow
    if flow_model != flow_sampler:
        usable = sampler_names(flow=flow_model)
        kind = "a flow-matching" if flow_model else "a diffusion (noise-prediction)"
        raise ValueError(f"sampler {name!r} does not fit {kind} model; choose one of {', '.join(usable)}")
    return name


def diffusers_scheduler(name: str, config):
    """The diffusers scheduler a user would swap in for `name`, built from a pipeline's scheduler config."""
    return get_sampler(check_sampler_name(name)).scheduler(config)


def dynamic_shift(config, image_seq_len: int) -> float:
    """The flow scheduler's mu for an image of `image_seq_len` transformer tokens: linear from base_shift at
    base_image_seq_len to max_shift at max_image_seq_len, as the SD3 and Flux pipelines compute it."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + base_shift - slope * base_len


def _set_flow_timesteps(scheduler, num_steps: int, image_seq_len: int | None, sigmas: list[float] | None) -> None:
    """`set_timesteps` of a flow scheduler as the SD3 and Flux pipelines call it (mu, custom sigmas)."""
    shift: dict = {}
    if scheduler.config.get("use_dynamic_shifting", False):
        if image_seq_len is None:
            raise ValueError("this flow scheduler shifts its sigmas by image size; pass image_seq_len")
        shift["mu"] = dynamic_shift(scheduler.config, image_seq_len)
    if sigmas is not None:
        shift["sigmas"] = list(sigmas)
    scheduler.set_timesteps(None if sigmas is not None else num_steps, **shift)


def make_schedule(name: str | None, config, num_steps: int, image_seq_len: int | None = None,
                  sigmas: list[float] | None = None) -> Schedule:
    """The schedule of sampler `name` (None: the model's default) at `num_steps` steps for a pipeline's
    scheduler `config`. A flow scheduler with dynamic shifting needs the image's transformer token count
    `image_seq_len` (the pipelines pass it; `diffinv.pipeline` computes it from the latent size); `sigmas`
    are the unshifted flow sigmas a pipeline passes itself (Flux), before the scheduler shifts them."""
    if num_steps < 1:
        raise ValueError(f"steps must be at least 1, got {num_steps}")
    note = default_note(config) if name is None else None
    name = resolve_sampler(name, config)
    sampler: Sampler = get_sampler(name)
    scheduler = sampler.scheduler(config)
    if sampler.flow:
        if sigmas is not None and name != "flow-euler":
            raise ValueError(f"custom sigmas are for flow-euler only, not {name}")
        if name == "flow-euler":
            _set_flow_timesteps(scheduler, num_steps, image_seq_len, sigmas)
        else:
            scheduler.set_timesteps(num_steps)
        return Schedule(name=name, steps=tuple(sampler.build(scheduler, num_steps)), prediction_type="flow", note=note)
    if sigmas is not None:
        raise ValueError("custom sigmas are for flow-matching schedulers only")
    if scheduler.config.prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unsupported prediction_type {scheduler.config.prediction_type!r}")
    scheduler.set_timesteps(num_steps)
    init_noise_sigma = float(np.asarray(scheduler.init_noise_sigma))
    steps = sampler.build(scheduler, num_steps)
    if sampler.sigma_scaled:
        init_noise_sigma *= steps[0].start.alpha  # diffusers starts at x = noise * init, here z = alpha x
    return Schedule(name=name, steps=tuple(steps), prediction_type=scheduler.config.prediction_type,
                    init_noise_sigma=init_noise_sigma, note=note)


def reverse(schedule: Schedule) -> tuple[Step, ...]:
    """The inverse steps, z_0 -> z_T: sampling step k run backwards, last sampling step first.

    Inverse step k starts at sampling step k's end, lands at its start, shows the network the same
    timestep, and keeps the sampling step's order; its history is the levels the earlier inverse steps
    started from (the ends of sampling steps k+1, k+2, ...), most recent first. A stepper with a
    `reverse(step)` method rewrites the rest (a second evaluation's timestep, say).
    """
    steps = schedule.steps
    inverse = []
    for step in reversed(steps):
        later = steps[step.index + 1 : step.index + 1 + len(step.history)]
        history = tuple(later_step.end for later_step in later)
        backward = Step(step.index, step.timestep, step.end, step.start, step.order, history, step.extra, step.stepper)
        flip = getattr(step.stepper, "reverse", None)
        inverse.append(flip(step, backward) if flip is not None else backward)
    return tuple(inverse)


def __getattr__(name: str) -> Any:
    """Built on first use, since building them imports every sampler module, which import this one: `FLOW_SAMPLERS`
    (the names of the samplers of flow-matching models) and `DIFFUSION_SAMPLERS` (those of diffusion models)."""
    if name in ("FLOW_SAMPLERS", "DIFFUSION_SAMPLERS"):
        return sampler_names(flow=name == "FLOW_SAMPLERS")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
