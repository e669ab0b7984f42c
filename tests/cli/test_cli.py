"""The CLI contract: files, keys and shapes it writes, and one-line errors with no half-written output."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from diffinv.cli import app
from diffinv.utils.specs import parse_options, parse_spec

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def generated(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "run"
    result = run("generate", "--model", model_dir, "--prompt", "a red circle", "--seed", 3,
                 "--sampler", "dpm++2m", "--steps", 6, "--guidance", 3, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_generate_writes_the_contract(generated):
    assert sorted(p.name for p in generated.iterdir()) == ["image.png", "latent.safetensors", "noise.safetensors", "report.json"]
    noise = load_file(generated / "noise.safetensors")["noise"]
    assert torch.equal(noise, torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)))
    assert load_file(generated / "latent.safetensors")["latent"].shape == (1, 4, 8, 8)
    report = json.loads((generated / "report.json").read_text())
    assert report["sampler"] == "dpm++2m" and report["nfe"] == 6 and report["peak_memory_bytes"] >= 0
    assert Image.open(generated / "image.png").size == (16, 16)


def test_invert_image_with_reference(model_dir, generated, tmp_path):
    out = tmp_path / "inv"
    result = run("invert", generated / "image.png", "--model", model_dir, "--prompt", "a red circle",
                 "--sampler", "dpm++2m", "--steps", 6, "--guidance", 3, "--reference", generated, "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["latent.safetensors", "noise.png", "noise.safetensors", "reconstruction.png",
                                                     "report.json"]
    assert Image.open(out / "noise.png").size[0] > 200  # true | recovered | difference
    report = json.loads((out / "report.json").read_text())
    for key in ("method", "sampler", "steps", "guidance", "nfe", "seconds", "peak_memory_bytes",
                "noise_nmse", "latent_nmse", "psnr", "decoder_seconds", "decoder_peak_memory_bytes", "decoder_iterations"):
        assert key in report, key
    assert report["nfe"] == 6 and report["method"] == "naive"


def test_invert_latent_recovers_noise(model_dir, generated, tmp_path):
    out = tmp_path / "inv"
    result = run("invert", "--latent", generated / "latent.safetensors", "--model", model_dir, "--prompt", "a red circle",
                 "--sampler", "dpm++2m", "--steps", 6, "--guidance", 3, "--reference", generated, "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["latent_nmse"] == 0.0
    assert report["noise_nmse"] < 0.1


def test_several_images_invert_as_one_batch(model_dir, generated, tmp_path):
    second = tmp_path / "gray.png"
    Image.open(generated / "image.png").convert("L").save(second)
    out = tmp_path / "inv"
    result = run("invert", generated / "image.png", second, "--model", model_dir, "--steps", 3, "--out", out)
    assert result.exit_code == 0, result.output
    assert "converted from L to RGB" in result.output
    assert load_file(out / "noise.safetensors")["noise"].shape == (2, 4, 8, 8)
    assert (out / "reconstruction_0.png").is_file() and (out / "reconstruction_1.png").is_file()


def test_resize_option(model_dir, generated, tmp_path):
    odd = tmp_path / "odd.png"
    Image.open(generated / "image.png").resize((21, 19)).save(odd)
    result = run("invert", odd, "--model", model_dir, "--steps", 2, "--out", tmp_path / "refused")
    assert result.exit_code == 2 and "not a multiple of the VAE factor 2" in result.output and "--resize" in result.output
    assert not (tmp_path / "refused").exists()
    result = run("invert", odd, "--model", model_dir, "--steps", 2, "--resize", "--out", tmp_path / "ok")
    assert result.exit_code == 0, result.output
    assert "resized from 21x19 to 16x16" in result.output


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["generate", "--prompt", "x", "--sampler", "heun3"], "unknown sampler 'heun3'"),
        (["invert", "IMAGE", "--method", "magic"], "unknown inversion method 'magic'"),
        (["invert", "IMAGE", "--decoder", "magic"], "unknown decoder method 'magic'"),
        (["generate", "--prompt", "x", "--model", "/no/such/folder"], "does not exist"),
        (["invert", "NOT_AN_IMAGE"], "not a readable image"),
        (["invert", "/no/such.png"], "no such file"),
        (["invert"], "give image files or --latent"),
        (["invert", "IMAGE", "--method-option", "novalue"], "is not KEY=VALUE"),
        (["generate", "--prompt", "x", "--guidance", "nan"], "guidance must be a finite number >= 0"),
        (["invert", "IMAGE", "--guidance", "-2"], "guidance must be a finite number >= 0"),
        (["invert", "IMAGE", "--method", "exact", "--method-option", "max_iter=abc"],
         "option max_iter of inversion method 'exact' must be a whole number, got 'abc'"),
        (["invert", "IMAGE", "--decoder", "gradient-free", "--decoder-option", "lr=fast"],
         "option lr of decoder method 'gradient-free' must be a finite number"),
        (["invert", "IMAGE", "--method", "easyinv", "--method-option", "eta=abc"],
         "option eta of inversion method 'easyinv' must be a finite number, got 'abc'"),
    ],
)
def test_errors_are_one_line_and_write_nothing(model_dir, generated, tmp_path, arguments, message):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    substitutions = {"IMAGE": generated / "image.png", "NOT_AN_IMAGE": not_an_image}
    arguments = [substitutions.get(argument, argument) for argument in arguments]
    if "--model" not in arguments:
        arguments += ["--model", model_dir]
    out = tmp_path / "out"
    result = run(*arguments, "--steps", 2, "--out", out)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [line for line in result.output.splitlines() if line.strip()][-1:]
    assert not out.exists()


def test_an_unwritable_output_folder_is_named_as_given(model_dir, generated, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should go")
    for out in (blocker, blocker / "inside"):
        result = run("invert", generated / "image.png", "--model", model_dir, "--steps", 2, "--out", out)
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines()[-1].startswith(f"error: cannot write to {out}")


def test_parse_options_and_specs():
    assert parse_options(["tol=1e-3", "max-iterations=20", "anderson=true", "solver=gd", "x=None"]) == {
        "tol": 1e-3, "max_iterations": 20, "anderson": True, "solver": "gd", "x": None
    }
    assert parse_spec("renoise:average=[0,5],renoise_steps=4") == ("renoise", {"average": [0, 5], "renoise_steps": 4})
    with pytest.raises(ValueError, match="is not KEY=VALUE"):
        parse_spec("gradient:lr")


def test_decoder_benchmark_and_cocoercivity_commands(model_dir, tmp_path):
    out, plot = tmp_path / "decoder.json", tmp_path / "pareto.png"
    result = run("bench", "decoder-inversion", "--model", model_dir, "--frames", "1,2", "--iterations", "3",
                 "--methods", "encoder,gradient-free,gradient:lr=0.01,schedule=false", "--json", out, "--plot", plot)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert {(row["frames"], row["method"]) for row in rows} == {
        (frames, method) for frames in (1, 2) for method in ("encoder", "gradient-free", "gradient:lr=0.01,schedule=false")
    }
    assert all(row["peak_memory_bytes"] >= 0 and row["seconds"] > 0 for row in rows)
    assert plot.stat().st_size > 0 and "decoder inversion, frames=2, dtype=float32" in result.output
    result = run("bench", "decoder-inversion", "--model", model_dir, "--frames", "one")
    assert result.exit_code == 2 and "whole numbers" in result.output
    result = run("check-cocoercivity", "--model", model_dir, "--n", 1, "--iterations", 2)
    assert result.exit_code == 0, result.output
    assert "beta_min=" in result.output and "condition" in result.output


def test_overhead_benchmark_matches_diffusers_inversion(model_dir, tmp_path):
    result = run("bench", "overhead", "--model", model_dir, "--steps", 4, "--guidances", "1,3", "--repeats", 1,
                 "--json", tmp_path / "rows.json")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert len(rows) == 2 and all(row["noise_nmse_between"] < 1e-10 for row in rows)  # the same inversion
    assert all(row["diffinv_seconds"] > 0 and row["diffusers_seconds"] > 0 for row in rows)


def test_editing_benchmark_command_takes_mode_specs(model_dir, tmp_path):
    out = tmp_path / "editing.json"
    result = run("bench", "editing", "--model", model_dir, "--n", 1, "--samplers", "ddim:3", "--guidances", "3",
                 "--methods", "naive,true-noise", "--modes", "prompt-to-prompt:local_blend=0.3,self_fraction=0,diffedit",
                 "--edits", "colour", "--photos", "", "--json", out)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert {(row["label"], row["mode"]) for row in rows} == {
        (label, mode) for label in ("naive", "true-noise") for mode in ("prompt-to-prompt:local_blend=0.3,self_fraction=0", "diffedit")
    }
    result = run("bench", "editing", "--model", model_dir, "--modes", "prompt-to-prompt:blend=1")
    assert result.exit_code == 2 and "unknown option(s) blend" in result.output
