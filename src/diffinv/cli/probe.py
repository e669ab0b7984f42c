"""`diffinv probe`: which sampling steps fold (cannot be inverted), from each step's smallest singular value."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from diffinv.cli.common import (
    DEVICE_HELP,
    DTYPE_HELP,
    MODEL_HELP,
    SAMPLER_HELP,
    SEED_BOUNDS,
    JsonOutput,
    app,
    user_errors,
    whole_numbers,
    writable_file,
)


@app.command()
def probe(
    model: str = typer.Option("tiny", "--model", "-m", help=MODEL_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    dtype: str = typer.Option("float32", help=DTYPE_HELP),
    sampler: Optional[str] = typer.Option(None, help=SAMPLER_HELP),
    steps: int = typer.Option(50, min=1, help="number of sampling steps"),
    guidance: float = typer.Option(7.5, help="classifier-free guidance scale of the trajectories (1 = none)"),
    prompt: Optional[list[str]] = typer.Option(
        None, "--prompt", "-p", help="prompt of the trajectories, repeatable (trajectory i takes prompt i, cycling); "
                                     "default: held-out caption combinations of the bundled model's scenes"),
    n: Optional[int] = typer.Option(None, "--n", "-n", min=1, help="trajectories (default: one per --prompt, else 2)"),
    seed: int = typer.Option(0, help="seed of the first trajectory's noise; trajectory i takes SEED + i", **SEED_BOUNDS),
    first: int = typer.Option(0, min=0, help="probe the first K step maps (the noisiest)"),
    last: int = typer.Option(0, min=0, help="probe the last K step maps"),
    at: Optional[str] = typer.Option(None, help="probe these step indices, comma-separated (0 the first; -1 the last)"),
    full_jacobian: Optional[bool] = typer.Option(
        None, "--full-jacobian/--no-full-jacobian",
        help="also the full Jacobians (n forward-mode columns per step and trajectory): every singular value and the "
             "eigenvalues with negative real part (default: for latents of at most 256 entries)"),
    iterations: int = typer.Option(200, min=1, help="most Lanczos (bidiagonalisation) iterations per step, each one "
                                                    "Jacobian-vector and one vector-Jacobian product"),
    tol: float = typer.Option(1e-2, min=0.0, help="relative residual at which a smallest singular value has converged"),
    json_path: JsonOutput = None,
    plot: Optional[Path] = typer.Option(None, help="write the margin along the steps here (PNG, log axis)",
                                        callback=writable_file),
) -> None:
    """For each sampling step along generated trajectories: the smallest singular value of the step's Jacobian
    (matrix-free Lanczos through Jacobian-vector products, any latent size) against its floor sigma_t / sigma_s,
    their ratio (margin; >= 1 for an ideal denoiser), the eigenvalues with negative real part (full Jacobians),
    and a verdict: fold (margin < 0.05 or such an eigenvalue: two noises reach the same image there), weak
    (margin < 0.5) or ok; '?' where the estimate did not converge (an upper bound). All steps by default."""
    with user_errors():
        from diffinv.bench.probe import fold_probe, format_fold_table, plot_margins, probe_prompts
        from diffinv.bench.tables import write_rows
        from diffinv.inversion.probe import chosen_steps
        from diffinv.models.denoiser import check_guidance
        from diffinv.models.loading import load
        from diffinv.sampler.schedule import check_sampler_name

        check_sampler_name(sampler)
        check_guidance(guidance)
        if not tol > 0:
            raise ValueError(f"--tol must be positive, got {tol}")
        chosen = tuple(whole_numbers(at)) if at else ()
        chosen_steps(steps, first, last, chosen)  # the ranges, before the model loads (again on the schedule)
        count = n or (len(prompt) if prompt else 2)
        prompts = [prompt[i % len(prompt)] for i in range(count)] if prompt else probe_prompts(count)
        seeds = [seed + i for i in range(count)]
        if seeds[-1] > SEED_BOUNDS["max"]:
            raise ValueError(f"seeds {seed} to {seeds[-1]}: the last is out of range")
        pipe = load(model, dtype=dtype, device=device)
        rows = fold_probe(pipe, prompts, seeds, sampler=sampler, steps=steps, guidance=guidance, first=first,
                          last=last, at=chosen, full=full_jacobian, iterations=iterations, tol=tol, progress=True)
        typer.echo(format_fold_table(rows))
        if json_path:
            write_rows(json_path, [{"model": model, **row} for row in rows])
        if plot:
            plot_margins(rows, plot, title=f"{model}: {rows[0]['sampler']}-{rows[0]['steps']} at guidance {guidance:g}")
