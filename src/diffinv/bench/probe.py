"""Is a model's sampler invertible where folds appear? Jacobians of the last DDIM steps, and exact inversion.

A DDIM step from noise level s to the less noisy t is x -> (sigma_t / sigma_s) x + c x0(x) with c > 0.
For an ideal denoiser the Jacobian of x0 is symmetric positive semi-definite (Tweedie), so the step's
eigenvalues are real and at least sigma_t / sigma_s, its *floor*. A learnt denoiser whose step has an
eigenvalue with negative real part, or a smallest singular value far below the floor, folds the
sampler there: two noises reach the same image and no inversion can tell them apart.

`invertibility` generates trajectories (DDIM by default, guidance 1; any sampler and guidance), computes
the full Jacobian of each of the last `last` step maps (`StepProblem.jacobian`, forward-mode columns; a
multistep solver's earlier data predictions held fixed, as exact inversion holds them) and reports, per
step, the floor, the smallest singular value (and its ratio to the floor), the number of eigenvalues with negative real
part and the asymmetry ||J - J^T||_F / ||J + J^T||_F; then it inverts each trajectory's z_0 naively and
exactly and reports the noise NMSE. A step to sigma 0 (DPM-Solver++'s last, which inverts the denoiser
itself) has floor 0: its ratio is not defined, and its smallest singular value is the denoiser's own
smallest gain there. Training runs it at checkpoints (`unet --probe-every`, in the settings of
`--probe-at`, e.g. `ddim:50@1,ddim:50@7.5,dpm++2m:10@1`), and `python -m diffinv_train probe` (from the
repository) prints it for any model folder. Large guidance folds the big high-noise steps of short schedules too (the bundled
model, DPM-Solver++(2M)-10 at guidance 7.5, its first step): `first` probes the first step maps, and
`solve` solves each probed step alone to show whether a per-step solver lands on the true latent or on a
second preimage.

The step probe itself (floors, matrix-free and full-Jacobian smallest singular values, verdicts) is
`diffinv.inversion.probe`; `fold_probe` runs it along trajectories of a pipeline for `diffinv probe`, which
prints `format_fold_table` and draws `plot_margins`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from diffinv.bench.scenes import caption, heldout_combos
from diffinv.inversion import METHODS, invert_sampler
from diffinv.inversion.naive import explicit_step
from diffinv.inversion.probe import (
    FOLD_MARGIN,
    ITERATIONS,
    TOL,
    chosen_steps,
    probe_steps,
    sample_trajectory,
    step_statistics,
)
from diffinv.models.denoiser import Denoiser
from diffinv.pipeline import pipeline_schedule, seeded_noise
from diffinv.sampler.schedule import Schedule, make_schedule, parse_samplers, reverse
from diffinv.sampler.update import usable_history
from diffinv.utils.metrics import nmse

#: Relative residual the per-step solve of `invertibility(..., solve=True)` aims at.
SOLVE_TOL = 1e-6

#: The settings training probes unless told otherwise: DDIM-50 at guidance 1.
DEFAULT_SETTINGS: tuple[tuple[str, int, float], ...] = (("ddim", 50, 1.0),)


def parse_probe_settings(text: str) -> list[tuple[str, int, float]]:
    """``"ddim:50@1,dpm++2m:10@7.5"`` -> [("ddim", 50, 1.0), ("dpm++2m", 10, 7.5)] (sampler, steps, guidance)."""
    settings = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        sampler, sep, guidance = item.partition("@")
        try:
            value = float(guidance)
        except ValueError:
            value = math.nan
        if not sep or not math.isfinite(value):
            raise ValueError(f"probe setting {item!r} is not SAMPLER:STEPS@GUIDANCE (e.g. ddim:50@7.5)")
        ((name, steps),) = parse_samplers(sampler)
        settings.append((name, steps, value))
    if not settings:
        raise ValueError("no probe setting given")
    return settings


def probe_prompts(count: int) -> list[str]:
    """`count` held-out caption combinations spread over the three shapes."""
    combos = heldout_combos()
    stride = max(1, len(combos) // count)
    return [caption(*combos[(i * stride) % len(combos)]) for i in range(count)]


def naive_start(denoiser: Denoiser, schedule: Schedule, latents: list[torch.Tensor], index: int) -> torch.Tensor:
    """Exact inversion's warm start for sampling step `index` when every later step was inverted exactly:
    the naive inverse step from the true latents[index + 1], its multistep history being the naive steps'
    own data predictions at the true later latents (as the driver hands them on)."""
    inverse = reverse(schedule)
    step = inverse[len(inverse) - 1 - index]
    earlier = []
    for later in range(index + 1, index + step.order):
        _, prediction = explicit_step(denoiser, latents[later + 1], inverse[len(inverse) - 1 - later], [])
        earlier.append(prediction.data)
    history = usable_history(step.start, list(zip(step.history, earlier)), step.order)
    return explicit_step(denoiser, latents[index + 1], step, history)[0]


@torch.no_grad()
def invertibility(pipe, trajectories: int = 2, last: int = 3, steps: int = 50, guidance: float = 1.0,
                  inversion: bool = True, exact_options: dict[str, Any] | None = None,
                  sampler: str = "ddim", branches: bool = False, first: int = 0,
                  solve: bool = False) -> list[dict[str, Any]]:
    """Rows of the probe (see the module docstring): one per (trajectory, step), then one per
    (trajectory, inversion method) with `noise_nmse`. Trajectory i uses held-out prompt i and seed i.
    The probed step maps are the first `first` and the last `last` of the schedule.

    `solve`: also solve each probed step on its own as exact inversion would if every other step were
    exact (the true later latent as target, the true earlier data predictions as history; the forward step
    with Anderson acceleration to 1e-6 from `naive_start`) and report the residual
    (`solved_residual`) and the NMSE to the true latent (`solved_nmse`): a residual at the tolerance with
    an NMSE far above its square is a second preimage of that step, which no per-step solver started
    there can tell from the true one.

    `branches` (guided probes): also the same step map at the same points with the conditional prediction
    alone and the unconditional one alone (their negative-eigenvalue counts, `conditional_*` and
    `unconditional_*`), and their `disagreement` ||J_c - J_u||_F / ||J_c - floor I||_F. Guidance makes the
    step's Jacobian J_u + w (J_c - J_u), so two branches that are each fine fold the guided step when they
    disagree by more than about 1 / w of the denoiser's own part."""
    if not (0 <= first <= steps and 0 <= last <= steps and first + last >= 1):
        raise ValueError(f"first and last must be between 0 and steps ({steps}), at least one step in all; "
                         f"got first={first}, last={last}")
    prompts = probe_prompts(trajectories)
    kind = pipe.scheduler.config.prediction_type
    denoiser = Denoiser.from_pipeline(pipe, prompts, trajectories, guidance, kind)
    schedule = make_schedule(sampler, pipe.scheduler.config, steps)
    noise = torch.cat([seeded_noise(pipe, seed) for seed in range(trajectories)])
    trajectory = sample_trajectory(denoiser, schedule, noise)
    path = trajectory.path
    split = branches and guidance != 1.0
    parts = {"conditional": Denoiser.from_pipeline(pipe, prompts, trajectories, 1.0, kind),
             "unconditional": Denoiser.from_pipeline(pipe, [""] * trajectories, trajectories, 1.0, kind)} if split else {}
    rows: list[dict[str, Any]] = []
    count = len(schedule.steps)
    solver = (METHODS.resolve("exact-paper", {"anderson": 3, "tol": SOLVE_TOL, "stall": 100, "max_iter": 500}).build()
              if solve else None)
    for index in sorted(set(range(first)) | set(range(count - last, count))):
        step = schedule.steps[index]

        def step_jacobians(model: Denoiser) -> torch.Tensor:
            return trajectory.problem(model, index).jacobian(path.latents[index])

        jacobians = step_jacobians(denoiser)
        if solver is not None:
            problem = trajectory.problem(denoiser, index)
            solved = solver.solve(problem, naive_start(denoiser, schedule, path.latents, index)).latent
            solved_residual = problem.relative(problem.residual(solved)).tolist()
        branch_jacobians = {name: step_jacobians(model) for name, model in parts.items()}
        floor = step.end.sigma / step.start.sigma
        for i, jacobian in enumerate(jacobians):
            row = {"prompt": prompts[i], "seed": i, "guidance": guidance, "sampler": schedule.name, "timestep": step.timestep,
                   **step_statistics(jacobian, floor)}
            if solver is not None:
                row["solved_residual"], row["solved_nmse"] = solved_residual[i], nmse(solved[i], path.latents[index][i])
            if split:
                conditional, unconditional = branch_jacobians["conditional"][i], branch_jacobians["unconditional"][i]
                for name, branch in (("conditional", conditional), ("unconditional", unconditional)):
                    stats = step_statistics(branch, floor)
                    row[f"{name}_negative_eigenvalues"] = stats["negative_eigenvalues"]
                    row[f"{name}_min_singular"] = stats["min_singular"]
                own = conditional - floor * torch.eye(len(conditional), dtype=conditional.dtype)
                row["disagreement"] = float((conditional - unconditional).norm() / own.norm())
            rows.append(row)
    if inversion:
        for method, options in (("naive", {}), ("exact", exact_options or {"anderson": 3})):
            result = invert_sampler(denoiser, schedule, path.final, method=method, **options)
            for i in range(trajectories):
                rows.append({"prompt": prompts[i], "seed": i, "guidance": guidance, "method": method,
                             "noise_nmse": nmse(result.noise[i], noise[i]), "converged": result.converged})
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    """One line: the worst step over all trajectories, and each inversion method's worst noise NMSE."""
    steps = [r for r in rows if "timestep" in r]
    parts = []
    floored = [r for r in steps if r["min_singular_over_floor"] is not None]
    if floored:
        worst = min(floored, key=lambda r: r["min_singular_over_floor"])
        parts.append(f"min sigma/floor {worst['min_singular_over_floor']:.3f} (t={worst['timestep']})")
    if len(floored) < len(steps):
        worst = min((r for r in steps if r["min_singular_over_floor"] is None), key=lambda r: r["min_singular"])
        parts.append(f"min sigma {worst['min_singular']:.2g} on the step to sigma 0 (t={worst['timestep']})")
    if steps:
        parts.append(f"negative eigenvalues {max(r['negative_eigenvalues'] for r in steps)}")
    solved = [r for r in steps if "solved_nmse" in r]
    if solved:
        worst = max(solved, key=lambda r: r["solved_nmse"])
        parts.append(f"per-step solve NMSE <= {worst['solved_nmse']:.3g} (t={worst['timestep']})")
    for method in dict.fromkeys(r["method"] for r in rows if "method" in r):
        worst = max(r["noise_nmse"] for r in rows if r.get("method") == method)
        parts.append(f"{method} noise NMSE <= {worst:.3g}")
    return "; ".join(parts)


def format_probe(rows: list[dict[str, Any]]) -> str:
    """The probe as a text table: one line per step map, then one per inversion."""
    split = any("disagreement" in r for r in rows)
    solved = any("solved_nmse" in r for r in rows)
    lines = [f"{'prompt':<40}{'seed':>5}{'t':>5}{'floor':>8}{'min sv':>9}{'sv/floor':>9}{'neg eig':>8}"
             f"{'asym':>7}" + (f"{'cond neg':>9}{'unc neg':>8}{'disagree':>9}" if split else "")
             + (f"{'solve res':>10}{'solve NMSE':>11}" if solved else "")]
    for r in rows:
        if "timestep" in r:
            ratio = "-" if r["min_singular_over_floor"] is None else f"{r['min_singular_over_floor']:.3f}"
            line = (f"{r['prompt']:<40}{r['seed']:>5}{r['timestep']:>5}{r['floor']:>8.3f}{r['min_singular']:>9.4f}"
                    f"{ratio:>9}{r['negative_eigenvalues']:>8}{r['asymmetry']:>7.3f}")
            if split:
                line += (f"{r['conditional_negative_eigenvalues']:>9}{r['unconditional_negative_eigenvalues']:>8}"
                         f"{r['disagreement']:>9.3f}")
            if solved:
                line += f"{r['solved_residual']:>10.1e}{r['solved_nmse']:>11.2e}"
            lines.append(line)
    inversions = [r for r in rows if "method" in r]
    if inversions:
        lines += ["", f"{'prompt':<40}{'seed':>5}  {'method':<7}{'noise NMSE':>12}  converged"]
        lines += [f"{r['prompt']:<40}{r['seed']:>5}  {r['method']:<7}{r['noise_nmse']:>12.3g}  {r['converged']}"
                  for r in inversions]
    lines += ["", "summary: " + summary(rows)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- `diffinv probe`


def fold_probe(pipe, prompts: list[str], seeds: list[int], sampler: str | None = None, steps: int = 50,
               guidance: float = 7.5, first: int = 0, last: int = 0, at: tuple[int, ...] = (), full: bool | None = None,
               iterations: int = ITERATIONS, tol: float = TOL, progress: bool = False) -> list[dict[str, Any]]:
    """`diffinv probe`: trajectory i from `seeds[i]` with `prompts[i]`, sampled as far as the last chosen step,
    and `diffinv.inversion.probe.probe_steps` on the chosen steps (`chosen_steps`: all by default)."""
    if len(prompts) != len(seeds) or not prompts:
        raise ValueError(f"give one prompt per seed, at least one; got {len(prompts)} prompts and {len(seeds)} seeds")
    schedule = pipeline_schedule(pipe, sampler, steps)
    indices = chosen_steps(len(schedule.steps), first, last, at)
    denoiser = Denoiser.from_pipeline(pipe, prompts, len(prompts), guidance, schedule.prediction_type)
    noise = torch.cat([seeded_noise(pipe, seed) for seed in seeds])
    trajectory = sample_trajectory(denoiser, schedule, noise, until=max(indices) + 1, progress=progress)
    labels = [{"prompt": prompt, "seed": seed} for prompt, seed in zip(prompts, seeds)]
    rows = probe_steps(denoiser, trajectory, indices, full=full, iterations=iterations, tol=tol, progress=progress,
                       labels=labels)
    for row in rows:
        row.update(sampler=schedule.name, steps=len(schedule.steps), guidance=guidance, tol=tol,
                   max_iterations=iterations)
    return rows


def fold_summary(rows: list[dict[str, Any]]) -> list[str]:
    """Lines under the table: the folded steps, the matrix-free estimates left unconverged, and how far the
    matrix-free smallest singular values lie from the full Jacobians' where both were computed."""
    folded = sorted({r["step"] for r in rows if r["verdict"] == "fold"})
    lines = [f"folds (margin < {FOLD_MARGIN:g} or an eigenvalue with negative real part) at step"
             f"{'s' if len(folded) != 1 else ''} {', '.join(map(str, folded))}" if folded else
             f"no fold (every margin >= {FOLD_MARGIN:g}, no eigenvalue with negative real part found)"]
    open_rows = [r for r in rows if not r["converged"]]
    if open_rows:
        lines.append(f"{len(open_rows)} of {len(rows)} estimates did not converge (residual > tol "
                     f"{rows[0].get('tol', TOL):g} after {max(r['iterations'] for r in open_rows)} iterations): "
                     "each is an upper bound on the smallest singular value, marked '?'")
    compared = [r for r in rows if r.get("relative_difference") is not None]
    if compared:
        worst = max(compared, key=lambda r: abs(r["relative_difference"]))
        lines.append(f"matrix-free vs full Jacobian: largest relative difference {100 * abs(worst['relative_difference']):.2f}% "
                     f"over {len(compared)} (step {worst['step']}, seed {worst['seed']})")
    return lines


def format_fold_table(rows: list[dict[str, Any]]) -> str:
    """`diffinv probe`'s table: one line per (step, trajectory), the prompts above it, the summary under it."""
    full = any("negative_eigenvalues" in r for r in rows)
    prompts = dict.fromkeys((r["seed"], r["prompt"]) for r in rows)
    lines = [f"seed {seed}: {prompt!r}" for seed, prompt in prompts] + [""]
    lines.append(f"{'step':>4}{'t':>6}{'sigma from -> to':>19}{'floor':>7}{'seed':>6}{'min sv':>10}{'margin':>9}"
                 + (f"{'full sv':>10}{'neg eig':>8}" if full else "") + f"{'iters':>6}  verdict")
    for r in rows:
        margin = "-" if r["margin"] is None else f"{r['margin']:.3f}"
        line = (f"{r['step']:>4}{r['timestep']:>6g}{r['sigma_from']:>10.3f} -> {r['sigma_to']:.3f}{r['floor']:>7.3f}"
                f"{r['seed']:>6}{r['min_singular']:>10.4g}{margin:>9}")
        if full:
            line += (f"{r['full_min_singular']:>10.4g}{r['negative_eigenvalues']:>8}" if "negative_eigenvalues" in r
                     else f"{'-':>10}{'-':>8}")
        lines.append(line + f"{r['iterations']:>6}  {r['verdict']}")
    return "\n".join(lines + [""] + fold_summary(rows))


def plot_margins(rows: list[dict[str, Any]], path, title: str = "") -> None:
    """Each trajectory's margin (smallest singular value over the floor) along the steps, on a log axis: the
    ideal denoiser's floor at 1, the fold threshold dashed, folded steps marked with a red cross, estimates that
    did not converge hollow. A step to sigma 0 has no floor and no point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for seed in dict.fromkeys(r["seed"] for r in rows):
        mine = [r for r in rows if r["seed"] == seed and r["margin"] is not None]
        if not mine:
            continue
        line, = ax.plot([r["step"] for r in mine], [r["margin"] for r in mine], marker="o", label=f"seed {seed}")
        hollow = [r for r in mine if not r["converged"]]
        ax.scatter([r["step"] for r in hollow], [r["margin"] for r in hollow], s=60, facecolors="white",
                   edgecolors=line.get_color(), zorder=3)
    folds = [r for r in rows if r["verdict"] == "fold" and r["margin"] is not None]
    if folds:
        ax.scatter([r["step"] for r in folds], [r["margin"] for r in folds], marker="x", color="red", s=80, zorder=4,
                   label="fold")
    ax.axhline(1.0, color="black", linewidth=1, label="floor (ideal denoiser: margin >= 1)")
    ax.axhline(FOLD_MARGIN, color="red", linewidth=1, linestyle="--", label=f"fold threshold {FOLD_MARGIN:g}")
    ax.set_yscale("log")
    for step in sorted({r["step"] for r in rows if r["margin"] is None}):
        folded = [str(r["seed"]) for r in rows if r["step"] == step and r["verdict"] == "fold"]
        note = "floor 0:\nno margin" + (f"\nfold: seed{'s' if len(folded) > 1 else ''} {', '.join(folded)}" if folded else "")
        ax.annotate(note, (step, 0.62), xycoords=("data", "axes fraction"), ha="center", fontsize=7,
                    color="red" if folded else "black")
    steps = sorted({(r["step"], r["timestep"]) for r in rows})
    shown = steps[::max(1, math.ceil(len(steps) / 12))]  # at most 12 labels
    ax.set_xticks([s for s, _ in shown])
    ax.set_xticklabels([f"{s}\nt={t:g}" for s, t in shown], fontsize=8)
    ax.set_xlabel("sampling step (t: the timestep the network sees)")
    ax.set_ylabel("margin: smallest singular value / floor")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
