"""Exact inversion (Hong et al.) and fixed-point inversion: round trips, robustness to guidance, honest failure."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from diffinv.cli import app
from diffinv.inversion import METHODS, invert_sampler
from diffinv.inversion.driver import run_inversion
from diffinv.models.denoiser import Denoiser
from diffinv.sampler.sampling import sample
from diffinv.sampler.schedule import make_schedule
from diffinv.utils.metrics import nmse

FAST = {"anderson": 3, "tol": 1e-5}


def round_trip(pipe, name, steps, guidance, unet=None, seed=0):
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    schedule = make_schedule(name, pipe.scheduler.config, steps)
    denoiser = Denoiser.from_pipeline(pipe, "a red circle", 1, guidance, schedule.prediction_type)
    if unet is not None:
        denoiser.network = unet(pipe.unet, denoiser.guided)
    latent = sample(denoiser, schedule, noise).final
    return noise, latent, denoiser, schedule


class Stiff(torch.nn.Module):
    """The tiny UNet plus beta * tanh(z) on the conditional branch only.

    A random tiny UNet barely depends on the prompt, so guidance changes nothing; this term makes the
    guided output's Jacobian grow with the guidance scale (as a trained model's does), which is what
    makes plain fixed-point iteration fail at large guidance.
    """

    def __init__(self, unet, guided: bool, beta: float = -1.0) -> None:
        super().__init__()
        self.inner, self.guided, self.beta = unet, guided, beta

    device = property(lambda self: self.inner.device)
    dtype = property(lambda self: self.inner.dtype)

    def forward(self, sample, *args, **kwargs):
        push = self.beta * torch.tanh(sample)
        if self.guided:  # batch = [unconditional, conditional]
            push = torch.cat([torch.zeros_like(push[: len(push) // 2]), push[len(push) // 2 :]])
        return (self.inner(sample, *args, **kwargs)[0] + push,)


@pytest.mark.parametrize("name", ["ddim", "dpm++2m", "dpm++3m"])
@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_round_trip_is_exact_where_naive_is_not(pipe, name, guidance):
    noise, latent, denoiser, schedule = round_trip(pipe, name, 10, guidance)
    naive = nmse(invert_sampler(denoiser, schedule, latent, "naive").noise, noise)
    result = invert_sampler(denoiser, schedule, latent, "exact-paper", sweeps=3, **FAST)
    error = nmse(result.noise, noise)
    assert naive > 1e-3  # 10 steps: the naive linearisation error is real
    assert error < 1e-6 and error < naive / 1000
    assert result.converged and len(result.residuals) == 10 and max(result.residuals) <= 1e-5
    assert result.report["method"] == "exact" and result.report["step_residuals"] == result.residuals


@pytest.mark.parametrize("name", ["ddim", "dpm++2m"])
def test_paper_defaults_forward_step_and_gradient_descent(pipe, name):
    noise, latent, denoiser, schedule = round_trip(pipe, name, 6, 7.5)
    naive = nmse(invert_sampler(denoiser, schedule, latent, "naive").noise, noise)
    for options in ({}, {"iteration": "gradient"}):  # the paper's forward step (rho 0.5, warm-up, halving) and GD
        result = invert_sampler(denoiser, schedule, latent, "exact-paper", **options)
        assert result.converged and max(result.residuals) <= 2.5e-4
        assert nmse(result.noise, noise) < naive / 100


def test_sweeps_make_multistep_inversion_more_exact(pipe):
    noise, latent, denoiser, schedule = round_trip(pipe, "dpm++2m", 10, 7.5)
    errors = [nmse(invert_sampler(denoiser, schedule, latent, "exact-paper", sweeps=sweeps, **FAST).noise, noise) for sweeps in (1, 3)]
    assert errors[1] < errors[0] / 10


@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_sweeps_keep_the_one_whose_noise_regenerates_z0_best(pipe, guidance):
    stiff = lambda unet, guided: Stiff(unet, guided, beta=-3.0)  # noqa: E731  (a chain that amplifies errors)
    noise, latent, denoiser, schedule = round_trip(pipe, "dpm++2m", 10, guidance, unet=stiff)

    def regeneration(z):
        return float((sample(denoiser, schedule, z).final - latent).norm() / latent.norm())

    solver = METHODS.resolve("exact-paper", dict(sweeps=3, fine_steps=2, **FAST)).build()
    result = run_inversion(denoiser, schedule, latent, solver, "exact")
    first = invert_sampler(denoiser, schedule, latent, "exact-paper", fine_steps=2, **FAST)
    errors = [float(e) for e in solver.regeneration]
    assert 1 <= len(errors) <= 3 and (len(errors) == 3 or errors[-1] >= min(errors[:-1]))  # stops when no better
    assert regeneration(result.noise) == pytest.approx(min(errors), rel=1e-3, abs=1e-9)
    assert regeneration(result.noise) <= regeneration(first.noise) * (1 + 1e-3) + 1e-9  # never worse than one sweep
    assert len(result.residuals) == 10


@pytest.mark.parametrize("sweeps", [1, 3])
def test_multistep_inversion_reports_how_well_its_noise_regenerates_z0(pipe, sweeps):
    # The step equations of DPM-Solver++ hold estimated multistep terms, so steps that meet their tolerance do
    # not make the noise a preimage: the result says how well the noise regenerates z_0, and a noise that
    # misses `regeneration_tol` is reported unconverged however small the step residuals.
    noise, latent, denoiser, schedule = round_trip(pipe, "dpm++2m", 10, 7.5)
    result = invert_sampler(denoiser, schedule, latent, "exact-paper", sweeps=sweeps, fine_steps=2, **FAST)
    measured = float((sample(denoiser, schedule, result.noise).final - latent).norm() / latent.norm())
    assert result.regeneration_error == pytest.approx(measured, rel=1e-3, abs=1e-9)
    assert result.report["regeneration_error"] == result.regeneration_error
    assert result.converged == (max(result.residuals) <= 1e-5 and result.regeneration_error <= 1e-2)
    strict = invert_sampler(denoiser, schedule, latent, "exact-paper", sweeps=sweeps, fine_steps=2, regeneration_tol=measured / 10, **FAST)
    assert not strict.converged and any("regenerates z_0" in note for note in strict.notes)
    assert torch.allclose(strict.noise, result.noise)  # the check only judges; it changes nothing
    unchecked = invert_sampler(denoiser, schedule, latent, "exact-paper", sweeps=sweeps, fine_steps=2, regeneration_tol=None, **FAST)
    assert unchecked.regeneration_error is None and "regeneration_error" not in unchecked.report


def test_first_order_inversion_has_no_regeneration_check(pipe):
    noise, latent, denoiser, schedule = round_trip(pipe, "ddim", 10, 7.5)
    assert invert_sampler(denoiser, schedule, latent, "exact-paper", **FAST).regeneration_error is None


def test_combine_sweeps_takes_each_latent_from_its_chosen_sweep():
    from diffinv.inversion.driver import StepOutcome
    from diffinv.inversion.exact import combine_sweeps

    def outcome(value, residual, converged):
        return StepOutcome(latent=torch.full((2, 3), value), data_prediction=torch.full((2, 3), -value),
                           residual=residual, converged=converged)

    sweeps = [[outcome(1.0, 1e-3, False)], [outcome(2.0, 1e-6, True)]]
    (step,) = combine_sweeps(sweeps, torch.tensor([1, 0]))
    assert step.latent[:, 0].tolist() == [2.0, 1.0] and step.data_prediction[:, 0].tolist() == [-2.0, -1.0]
    assert step.residual == 1e-3 and not step.converged  # the worst of the sweeps it took latents from
    (only_second,) = combine_sweeps(sweeps, torch.tensor([1, 1]))
    assert only_second.residual == 1e-6 and only_second.converged


def test_anderson_needs_far_fewer_network_calls(pipe):
    noise, latent, denoiser, schedule = round_trip(pipe, "ddim", 10, 7.5)
    plain = invert_sampler(denoiser, schedule, latent, "exact-paper", tol=1e-5)
    fast = invert_sampler(denoiser, schedule, latent, "exact-paper", **FAST)
    assert plain.converged and fast.converged
    assert fast.nfe <= plain.nfe / 2
    assert nmse(fast.noise, noise) <= 2 * nmse(plain.noise, noise)


def test_fixed_point_fails_at_large_guidance_where_exact_does_not(pipe):
    stiff = lambda unet, guided: Stiff(unet, guided)  # noqa: E731
    for guidance in (1.0, 7.5):
        noise, latent, denoiser, schedule = round_trip(pipe, "ddim", 10, guidance, unet=stiff)
        fixed = invert_sampler(denoiser, schedule, latent, "fixed-point", tol=1e-5)
        exact = invert_sampler(denoiser, schedule, latent, "exact-paper", **FAST)
        assert exact.converged and nmse(exact.noise, noise) < 1e-6
        if guidance == 1.0:
            assert fixed.converged and nmse(fixed.noise, noise) < 1e-6
        else:
            assert not fixed.converged and fixed.notes  # reported, not silent
            assert nmse(fixed.noise, noise) > 1e3 * nmse(exact.noise, noise)


@pytest.mark.parametrize("refine", ["lm", "lm-dense"])
def test_levenberg_marquardt_finishes_steps_the_first_solver_leaves(pipe, refine):
    noise, latent, denoiser, schedule = round_trip(pipe, "ddim", 5, 7.5)
    starved = invert_sampler(denoiser, schedule, latent, "exact-paper", max_iter=2, tol=3e-6)
    solver = METHODS.resolve("exact-paper", dict(max_iter=2, tol=3e-6, refine=refine)).build()  # 2 forward steps cannot reach 3e-6 ...
    refined = run_inversion(denoiser, schedule, latent, solver, "exact")
    assert not starved.converged
    assert refined.converged and max(refined.residuals) <= 3e-6  # ... Levenberg-Marquardt then does (float32 floor ~1e-6)
    stops = [entry["stop"] for entry in solver.log]
    assert set(stops) <= {"tolerance", "lm tolerance"} and stops.count("lm tolerance") >= 3
    assert nmse(refined.noise, noise) < nmse(starved.noise, noise) / 100
    assert refined.nfe > starved.nfe + 5 * 2  # Jacobian products count as network calls


@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_full_jacobian_matches_forward_mode_products(pipe, guidance):
    """`StepProblem.jacobian` (batched columns, repeated latents, history and correction tiled) agrees with
    the single Jacobian-vector products Levenberg-Marquardt uses, for a multistep DPM-Solver++ step on 2 latents."""
    from diffinv.inversion.step_problem import StepProblem

    schedule = make_schedule("dpm++2m", pipe.scheduler.config, 5)
    denoiser = Denoiser.from_pipeline(pipe, "a red circle", 2, guidance, schedule.prediction_type)
    forward = next(step for step in schedule.steps if step.order > 1)
    gen = torch.Generator().manual_seed(0)
    z, x = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    history = tuple((point, torch.randn(2, 4, 8, 8, generator=gen)) for point in forward.history)
    problem = StepProblem(denoiser, forward, x, correction=torch.randn(2, 4, 8, 8, generator=gen), history=history)
    before = denoiser.nfe
    jacobian = problem.jacobian(z, chunk=48)  # 256 columns in chunks that do not divide it
    assert jacobian.shape == (2, 256, 256) and denoiser.nfe - before == 256
    jvp, _ = problem.linearize(z)
    v = torch.randn(2, 4, 8, 8, generator=gen)
    expected = jvp(v).flatten(1)
    got = (jacobian @ v.flatten(1)[..., None])[..., 0]
    assert torch.allclose(got, expected, atol=1e-4 * float(expected.abs().max()))


def test_failure_to_converge_is_reported(pipe):
    noise, latent, denoiser, schedule = round_trip(pipe, "dpm++2m", 5, 7.5)
    solver = METHODS.resolve("exact-paper", dict(max_iter=2, tol=1e-9, fine_steps=2)).build()
    result = run_inversion(denoiser, schedule, latent, solver, "exact")
    assert not result.converged and result.notes
    assert len(result.residuals) == 5 and all(residual > 1e-9 for residual in result.residuals)
    assert result.report["converged"] is False and "step_residuals" in result.report
    assert [entry["stop"] for entry in solver.log] == ["max_iter"] * 5 and all(entry["evaluations"] == 2 for entry in solver.log)


def test_plateau_stop_saves_network_calls(pipe):
    noise, latent, denoiser, schedule = round_trip(pipe, "ddim", 4, 3.0)
    solver = METHODS.resolve("exact-paper", dict(tol=1e-12, stall=5, anderson=3)).build()  # unreachable in float32: stop on the plateau
    result = run_inversion(denoiser, schedule, latent, solver, "exact")
    assert not result.converged
    # Each step gives up at the float32 floor: on its plateau, or when round-off makes the residual jump from
    # its best ("diverged"); never by running to max_iter, and every step got close before it stopped.
    assert {entry["stop"] for entry in solver.log} <= {"plateau", "diverged"} and result.nfe < 4 * 100
    assert max(entry["residual"] for entry in solver.log) < 1e-4


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("exact", {"tollerance": 1e-4}, "unknown option"),
        ("exact", {"iteration": "newton"}, "iteration of inversion method 'exact' must be one of forward-step, gradient"),
        ("exact", {"refine": "bfgs"}, "refine of inversion method 'exact' must be one of None, lm, lm-dense"),
        ("exact", {"refine": "lm", "refine_inner": 0}, "refine_inner"),
        ("exact", {"refine": "lm-dense", "refine_iter": 0}, "refine_iter"),
        ("exact", {"max_iter": 0}, "max_iter"),
        ("exact", {"tol": -1.0}, "tol"),
        ("exact", {"regeneration_tol": 0.0}, "regeneration_tol of inversion method 'exact' must be > 0"),
        ("fixed-point", {"regeneration_tol": -1e-2}, "regeneration_tol of inversion method 'fixed-point' must be > 0"),
        ("fixed-point", {"rho": 0.5}, "unknown option"),
    ],
)
def test_bad_options_raise_value_error(method, options, message):
    with pytest.raises(ValueError, match=message):
        METHODS.resolve(method, options).build()


def test_cli_invert_and_benchmark(model_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, [
        "bench", "sampler-inversion", "--model", str(model_dir), "--n", "1", "--samplers", "ddim:4,dpm++2m:4",
        "--guidances", "7.5", "--methods", "naive,exact-aa,exact:anderson=3,sweeps=3", "--json", str(tmp_path / "bench.json"),
        # the default 1e-6 sits near float32's round-off for these steps: one CPU stalls at 1.04e-6, another below
        "--tol", "1e-5",
    ])
    assert result.exit_code == 0, result.output
    assert "exact-aa" in result.output and "noise NMSE" in result.output
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert len(rows) == 6 and {row["method"] for row in rows} == {"naive", "exact-aa", "exact:anderson=3,sweeps=3"}
    for key in ("method", "decoder", "sampler", "steps", "guidance", "dtype", "image", "noise_nmse", "latent_nmse",
                "nfe", "seconds", "peak_memory_bytes", "converged"):
        assert all(key in row for row in rows)
    naive, exact = (next(r for r in rows if r["method"] == m and r["sampler"] == "dpm++2m") for m in ("naive", "exact-aa"))
    assert exact["noise_nmse"] < naive["noise_nmse"] / 100 and exact["converged"] and exact["max_step_residual"] <= 1e-5
    bad = runner.invoke(app, ["bench", "sampler-inversion", "--model", str(model_dir), "--methods", "magic"])
    assert bad.exit_code == 2 and "unknown inversion method" in bad.output
    bad = runner.invoke(app, ["bench", "sampler-inversion", "--model", str(model_dir), "--methods", "exact-lm:refine=bfgs"])
    assert bad.exit_code == 2 and "refine of inversion method 'exact' must be one of" in bad.output

    common = ["--model", str(model_dir), "--prompt", "a red circle", "--sampler", "dpm++2m", "--steps", "4", "--guidance", "7.5"]
    assert runner.invoke(app, ["generate", *common[:4], "--seed", "1", *common[4:], "--out", str(tmp_path / "gen")]).exit_code == 0
    inverted = runner.invoke(app, [
        "invert", "--latent", str(tmp_path / "gen" / "latent.safetensors"), *common, "--method", "exact",
        "--method-option", "anderson=3", "--method-option", "tol=1e-5", "--method-option", "sweeps=3", "--reference", str(tmp_path / "gen"),
        "--out", str(tmp_path / "inv"),
    ])
    assert inverted.exit_code == 0, inverted.output
    report = json.loads((tmp_path / "inv" / "report.json").read_text())
    assert report["method"] == "exact" and report["converged"] and report["noise_nmse"] < 1e-5 and len(report["step_residuals"]) == 4
    assert "max_step_residual" in inverted.output and "step_residuals" not in inverted.output  # the list stays in report.json
    wrong = runner.invoke(app, ["invert", "--latent", str(tmp_path / "gen" / "latent.safetensors"), *common, "--method", "exact",
                                "--method-option", "bogus=1", "--out", str(tmp_path / "bad")])
    assert wrong.exit_code == 2 and "unknown option" in wrong.output and not (tmp_path / "bad").exists()


def test_benchmark_cycles_prompts_over_seeds(pipe):
    """Two prompts over two seeds give the mean of the two single-prompt runs (seed 0 with the first, seed 1 with
    the second): each latent is generated and inverted with its own prompt."""
    from diffinv.bench.sampler import run_sampler_benchmark

    grid = {"samplers": [("ddim", 4)], "guidances": [3.0], "methods": ["naive"], "progress": False}
    both = run_sampler_benchmark(pipe, n=2, prompt=["a red circle", "a blue square"], **grid)[0]
    first = run_sampler_benchmark(pipe, n=1, prompt="a red circle", seed=0, **grid)[0]
    second = run_sampler_benchmark(pipe, n=1, prompt="a blue square", seed=1, **grid)[0]
    assert both["prompts"] == ["a red circle", "a blue square"]
    assert both["noise_nmse"] == pytest.approx((first["noise_nmse"] + second["noise_nmse"]) / 2, rel=1e-5)
    assert first["noise_nmse"] != pytest.approx(second["noise_nmse"], rel=1e-3)
    assert both["noise_nmse_each"] == pytest.approx([first["noise_nmse"], second["noise_nmse"]], rel=1e-5)
    assert both["converged_each"] == [True, True]
    with pytest.raises(ValueError, match="no prompt"):
        run_sampler_benchmark(pipe, n=1, prompt=[], **grid)


def test_never_worse_than_naive_where_steps_do_not_converge(pipe, monkeypatch):
    """Where a step has no nearby solution, a per-step solver can end on a point far from the true latent, and
    the noise comes back worse than naive inversion's. Constructed here: every step's solve lands 0.3 (per
    entry) away from where it started, unconverged. The default keeps, per latent, whichever of the two noises
    regenerates z_0 closer, says so, and counts the extra network calls; keep_better=False returns it as is."""
    import dataclasses

    import diffinv.inversion.exact as exact_module

    real_iterate = exact_module.solve_iteratively

    def astray(evaluate, start, **loop):
        found = real_iterate(evaluate, start, **loop)
        shift = 0.3 * torch.randn(start.shape, generator=torch.Generator().manual_seed(7))
        return dataclasses.replace(found, latent=found.latent + shift.to(start.dtype), converged=False, stop="plateau")

    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    schedule = make_schedule("ddim", pipe.scheduler.config, 6)
    denoiser = Denoiser.from_pipeline(pipe, "a red circle", 2, 7.5, schedule.prediction_type)
    latent = sample(denoiser, schedule, noise).final
    naive = invert_sampler(denoiser, schedule, latent, "naive")
    monkeypatch.setattr(exact_module, "solve_iteratively", astray)
    raw = invert_sampler(denoiser, schedule, latent, "exact", keep_better=False)
    kept = invert_sampler(denoiser, schedule, latent, "exact")
    per_latent = lambda a: ((a - noise) ** 2).flatten(1).sum(1) / (noise**2).flatten(1).sum(1)  # noqa: E731
    assert not raw.converged and (per_latent(raw.noise) > per_latent(naive.noise)).all()  # the case is real
    assert kept.returned == ["naive", "naive"] and torch.equal(kept.noise, naive.noise)
    assert kept.nfe == raw.nfe + 6 + 2 * 6 and "kept naive inversion's noise" in kept.notes[-1]
    assert kept.report["returned"] == ["naive", "naive"] and not kept.converged and str(kept.status) == "plateau"
    monkeypatch.setattr(exact_module, "solve_iteratively", real_iterate)
    converged = invert_sampler(denoiser, schedule, latent, "exact")
    assert converged.converged and converged.returned == []  # a converged run is returned as it is


def test_one_divergence_switch_for_both_stages(pipe, monkeypatch):
    """`on_divergence="raise"` (default) raises each stage's error; "report" returns a result whose status says
    diverged, with a warning, from diffinv.invert as from each stage; anything else is a one-line error."""
    import diffinv
    from diffinv.inversion import InversionDiverged
    from diffinv.utils.status import Status

    schedule = make_schedule("ddim", pipe.scheduler.config, 4)
    denoiser = Denoiser.from_pipeline(pipe, "a red circle", 1, 1.0, schedule.prediction_type)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    real_output = denoiser.output
    monkeypatch.setattr(denoiser, "output", lambda x, t: real_output(x, t) * float("nan"))
    with pytest.raises(InversionDiverged, match="inverse step 1/4"):
        invert_sampler(denoiser, schedule, latent, "naive")
    with pytest.warns(RuntimeWarning, match="NaN"):
        reported = invert_sampler(denoiser, schedule, latent, "exact", on_divergence="report")
    assert reported.status is Status.DIVERGED and not reported.converged and torch.isnan(reported.noise).all()
    assert "inverse step 1/4" in reported.notes[-1]
    with pytest.raises(ValueError, match="on_divergence must be raise or report, got 'warn'"):
        invert_sampler(denoiser, schedule, latent, "naive", on_divergence="warn")
    with pytest.raises(ValueError, match="on_divergence must be raise or report"):
        diffinv.invert(pipe, latent=latent, steps=4, on_divergence="ignore")


def test_keep_better_passes_over_a_noise_no_gaussian_draw_has(pipe, monkeypatch):
    """At a fold a per-step solver can land on a second preimage that regenerates z_0 closer than naive's noise yet
    lies far from the true noise; such a noise often has a norm no Gaussian draw of its size has. keep_better then
    returns naive's noise although the other regenerates z_0 closer; with gaussian_test=None regeneration decides."""
    import diffinv.inversion.sweeps as sweeps_module
    from diffinv.inversion import gaussian_norm, keep_better_than_naive
    from diffinv.inversion.result import InversionResult

    draws = torch.randn(200, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    assert gaussian_norm(draws, 1e-6).all() and not gaussian_norm(1.3 * draws, 1e-6).any()
    schedule = make_schedule("ddim", pipe.scheduler.config, 4)
    denoiser = Denoiser.from_pipeline(pipe, "a red circle", 2, 1.0, schedule.prediction_type)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    latent = sample(denoiser, schedule, noise).final
    naive = invert_sampler(denoiser, schedule, latent, "naive").noise
    far = naive * torch.tensor([1.0, 1.6]).view(2, 1, 1, 1)  # latent 1: a norm no draw of 256 entries has
    calls = iter([torch.tensor([0.01, 0.01]), torch.tensor([0.02, 0.02])])  # "far" regenerates z_0 closer
    monkeypatch.setattr(sweeps_module, "regeneration_errors", lambda *args: next(calls))

    def unconverged() -> InversionResult:
        return InversionResult(noise=far.clone(), latent=latent, method="exact", sampler="ddim", steps=4, guidance=1.0,
                               converged=False)

    tested = unconverged()
    keep_better_than_naive(denoiser, schedule, latent, tested, 1e-6)
    assert tested.returned == ["exact", "naive"] and torch.equal(tested.noise[1], naive[1])
    calls = iter([torch.tensor([0.01, 0.01]), torch.tensor([0.02, 0.02])])
    untested = unconverged()
    keep_better_than_naive(denoiser, schedule, latent, untested, None)
    assert untested.returned == ["exact", "exact"] and torch.equal(untested.noise, far)
