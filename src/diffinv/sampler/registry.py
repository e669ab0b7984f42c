"""The sampler registry: one line per sampler in `ENTRIES`, naming the module-level `Sampler` that defines it.

A `Sampler` names the diffusers scheduler it reproduces (built with `from_config`, the way a user swaps
schedulers) and builds its steps from that scheduler after `set_timesteps`; each step carries its stepper
(how it runs: which network calls, which earlier records it reads). Sampling, naive, exact and fixed-point
inversion, EasyInv and ReNoise read only that, so a new sampler is one module plus its line here.
Entries are imported when first used, so listing the names (the CLI's help) imports neither torch nor
diffusers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Sampler name -> "module:attribute" of its `Sampler`. Adding a sampler: write its module, add its line here.
ENTRIES: dict[str, str] = {
    "ddim": "diffinv.sampler.classic:DDIM",
    "euler": "diffinv.sampler.classic:EULER",
    "dpm++1": "diffinv.sampler.classic:DPM1",
    "dpm++2m": "diffinv.sampler.classic:DPM2M",
    "dpm++3m": "diffinv.sampler.classic:DPM3M",
    "pndm": "diffinv.sampler.pndm:PNDM",
    "unipc": "diffinv.sampler.unipc:UNIPC2",
    "unipc3": "diffinv.sampler.unipc:UNIPC3",
    "heun": "diffinv.sampler.heun:HEUN_SAMPLER",
    "deis": "diffinv.sampler.deis:DEIS2",
    "deis3": "diffinv.sampler.deis:DEIS3",
    "flow-euler": "diffinv.sampler.classic:FLOW_EULER",
    "flow-heun": "diffinv.sampler.heun:FLOW_HEUN_SAMPLER",
}

#: Diffusers schedulers that draw fresh noise at every step, and why that rules out inversion.
STOCHASTIC: dict[str, str] = {
    "EulerAncestralDiscreteScheduler": "Euler ancestral",
    "KDPM2AncestralDiscreteScheduler": "DPM2 ancestral",
    "DPMSolverSDEScheduler": "DPM-Solver SDE",
    "DDPMScheduler": "DDPM",
    "LCMScheduler": "LCM",
    "TCDScheduler": "TCD",
    "CMStochasticIterativeScheduler": "consistency-model sampling",
}
#: Names a user might type for them (refused with the reason, not "unknown").
STOCHASTIC_NAMES: dict[str, str] = {
    "euler-ancestral": "EulerAncestralDiscreteScheduler", "euler-a": "EulerAncestralDiscreteScheduler",
    "dpm2-ancestral": "KDPM2AncestralDiscreteScheduler", "dpm++sde": "DPMSolverSDEScheduler",
    "dpm++2m-sde": "DPMSolverMultistepScheduler", "ddpm": "DDPMScheduler", "lcm": "LCMScheduler", "tcd": "TCDScheduler",
}


@dataclass(frozen=True)
class Sampler:
    """One registered sampler.

    `build(scheduler, num_steps)` returns its steps from the diffusers scheduler after `set_timesteps`;
    `options` are the `from_config` overrides that make the scheduler this sampler (e.g. solver order);
    `matches(config)` says whether a model folder's config of `scheduler_class` means this sampler (for the
    model's own default); `sigma_scaled` samplers start from noise * init_noise_sigma in the sigma
    parametrisation (diffinv's latents are variance preserving, z = alpha x)."""

    name: str
    scheduler_class: type
    build: Callable[[Any, int], list]
    flow: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    matches: Callable[[Any], bool] = lambda config: True
    sigma_scaled: bool = False
    description: str = ""

    def scheduler(self, config):
        """The diffusers scheduler a user would swap in for this sampler, from a pipeline's scheduler config."""
        return self.scheduler_class.from_config(config, **dict(self.options))


_LOADED: dict[str, Sampler] = {}


def get_sampler(name: str) -> Sampler:
    """The registered sampler `name` (its module imported on first use); KeyError if there is none."""
    if name not in _LOADED:
        module, _, attribute = ENTRIES[name].partition(":")
        sampler = getattr(importlib.import_module(module), attribute)
        if sampler.name != name:
            raise RuntimeError(f"registry entry {name!r} points at sampler {sampler.name!r}")
        _LOADED[name] = sampler
    return _LOADED[name]


def samplers() -> dict[str, Sampler]:
    """Every sampler diffinv can run and invert, by name: its registry entry (imports all their modules)."""
    return {name: get_sampler(name) for name in ENTRIES}


def sampler_names(flow: bool | None = None) -> tuple[str, ...]:
    """Registered sampler names: all (no import), or only those of flow-matching (True) or diffusion (False) models."""
    if flow is None:
        return tuple(ENTRIES)
    return tuple(name for name in ENTRIES if get_sampler(name).flow == flow)


def sampler_help() -> str:
    """The CLI's --sampler help: the registered names and how the default is chosen."""
    return (f"{', '.join(ENTRIES)} (default: the model folder's own scheduler when diffinv has it, "
            "else flow-euler on flow-matching models and ddim on the others)")


def stochastic_reason(name: str) -> str | None:
    """A one-line refusal if `name` (a sampler name or a diffusers class name) is a stochastic sampler."""
    class_name = STOCHASTIC_NAMES.get(name, name)
    label = STOCHASTIC.get(class_name) or ("DPM-Solver++ SDE" if name == "dpm++2m-sde" else None)
    if label is None:
        return None
    return (f"{label} ({class_name}) is stochastic: it adds fresh noise at every step, so its images cannot be "
            "inverted without the noise it drew")
