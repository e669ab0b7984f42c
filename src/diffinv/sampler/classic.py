"""The single-call samplers: DDIM, Euler, DPM-Solver++ 1/2/3M and flow Euler, registered in one module.

Their step is `update.update`, x_end = alpha_end x0 + sigma_end eps + sum_j w_j x0_j, with the network called
once at the step's start: ``ddim`` (DDIM, eta 0), ``euler`` (diffusers' `EulerDiscreteScheduler`, SDXL's
default: DDIM in the sigma parametrisation, on the Euler scheduler's own timesteps and sigmas, Karras sigmas
included), ``dpm++1``/``dpm++2m``/``dpm++3m`` (DPM-Solver++ multistep, ``algorithm_type="dpmsolver++"``, the
config's ``lower_order_final`` and ``final_sigmas_type``) on variance-preserving latents (a sigma-parametrised
scheduler's x = z / alpha), and ``flow-euler`` (`FlowMatchEulerDiscreteScheduler`, SD3's and Flux's) on the
straight path x = (1 - sigma) x0 + sigma eps, whose Euler step is the DDIM update on those levels.
"""

from __future__ import annotations

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

from diffinv.models.prediction import NoiseLevel
from diffinv.sampler.registry import Sampler
from diffinv.sampler.schedule import Step, alphas_cumprod_point, network_timestep, sigma_point
from diffinv.sampler.update import multistep_order


def ddim_steps(scheduler: DDIMScheduler, num_steps: int) -> list[Step]:
    """DDIM's steps: alphas_cumprod at each timestep and at timestep - stride (the final alpha below 0)."""
    config = scheduler.config
    if config.clip_sample or config.thresholding:
        raise ValueError("DDIM with clip_sample or thresholding is not invertible; set both to False")
    alphas_cumprod = scheduler.alphas_cumprod.double().numpy()
    stride = config.num_train_timesteps // num_steps
    steps = []
    for index, timestep in enumerate(int(t) for t in scheduler.timesteps):
        previous = timestep - stride
        end = alphas_cumprod[previous] if previous >= 0 else float(scheduler.final_alpha_cumprod)
        steps.append(Step(index, timestep, alphas_cumprod_point(alphas_cumprod[timestep]), alphas_cumprod_point(end), 1))
    return steps


def euler_steps(scheduler: EulerDiscreteScheduler, num_steps: int) -> list[Step]:
    """Euler's steps on the scheduler's own sigmas (variance-preserving levels) and interpolated timesteps."""
    config = scheduler.config
    if getattr(config, "use_exponential_sigmas", False) or getattr(config, "use_beta_sigmas", False):
        raise ValueError("Euler with exponential or beta sigmas is not supported; use the default or Karras sigmas")
    points = [sigma_point(sigma) for sigma in scheduler.sigmas.double().numpy()]
    return [Step(index, network_timestep(t), points[index], points[index + 1], 1) for index, t in enumerate(scheduler.timesteps)]


def dpm_order(index: int, num_steps: int, solver_order: int, config) -> int:
    """The order diffusers' DPMSolverMultistepScheduler.step uses at step `index` (same rules)."""
    lower_final = index == num_steps - 1 and (
        config.euler_at_final or (config.lower_order_final and num_steps < 15) or config.final_sigmas_type == "zero"
    )
    lower_second = index == num_steps - 2 and config.lower_order_final and num_steps < 15
    return multistep_order(index, solver_order, lower_final, lower_second)


def dpm_steps(scheduler: DPMSolverMultistepScheduler, num_steps: int) -> list[Step]:
    """DPM-Solver++ steps: each step's order by diffusers' rules, history = the earlier steps' levels."""
    config = scheduler.config
    if config.thresholding or config.solver_type != "midpoint" or config.variance_type is not None:
        raise ValueError("only DPM-Solver++ with solver_type='midpoint', no thresholding, no learned variance is supported")
    if config.use_flow_sigmas:
        raise ValueError("flow-matching sigmas are not supported yet")
    points = [sigma_point(sigma) for sigma in scheduler.sigmas.double().numpy()]
    steps = []
    timesteps = [int(t) for t in scheduler.timesteps]
    for index, timestep in enumerate(timesteps):
        order = dpm_order(index, len(timesteps), config.solver_order, config)
        history = tuple(points[index - back] for back in range(1, order))
        steps.append(Step(index, timestep, points[index], points[index + 1], order, history))
    return steps


def flow_steps(scheduler: FlowMatchEulerDiscreteScheduler, num_steps: int) -> list[Step]:
    """Flow Euler's steps on the scheduler's shifted sigmas, levels (1 - sigma, sigma)."""
    config = scheduler.config
    if config.get("stochastic_sampling", False) or config.get("invert_sigmas", False):
        raise ValueError("flow matching with stochastic sampling or inverted sigmas is not invertible; set both to False")
    points = [NoiseLevel(alpha=1.0 - float(sigma), sigma=float(sigma)) for sigma in scheduler.sigmas.double().numpy()]
    return [Step(index, network_timestep(t), points[index], points[index + 1], 1) for index, t in enumerate(scheduler.timesteps)]


def _is_dpm(order: int):
    def matches(config) -> bool:
        return (config.get("algorithm_type", "dpmsolver++") == "dpmsolver++" and config.get("solver_order", 2) == order
                and config.get("solver_type", "midpoint") == "midpoint")
    return matches


DDIM = Sampler("ddim", DDIMScheduler, ddim_steps, description="DDIM, eta 0")
EULER = Sampler("euler", EulerDiscreteScheduler, euler_steps, sigma_scaled=True, description="Euler (SDXL's default)")
DPM1, DPM2M, DPM3M = (
    Sampler(name, DPMSolverMultistepScheduler, dpm_steps, options={"algorithm_type": "dpmsolver++", "solver_order": order},
            matches=_is_dpm(order), description=f"DPM-Solver++ multistep, order {order}")
    for name, order in (("dpm++1", 1), ("dpm++2m", 2), ("dpm++3m", 3))
)
FLOW_EULER = Sampler("flow-euler", FlowMatchEulerDiscreteScheduler, flow_steps, flow=True, description="flow-matching Euler (SD3, Flux)")
