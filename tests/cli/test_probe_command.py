"""`diffinv probe`: the table, --json and --plot on a tiny random pipeline, and one-line errors."""

from __future__ import annotations

import json

import pytest
from cli_helpers import entry_point, run
from PIL import Image


def test_probe_prints_the_table_and_writes_json_and_plot(model_dir, tmp_path):
    out_json, out_plot = tmp_path / "probe" / "rows.json", tmp_path / "margins.png"
    result = run("probe", "--model", model_dir, "--sampler", "dpm++2m", "--steps", 4, "--guidance", 5, "-n", 1,
                 "--first", 1, "--at", -1, "--json", out_json, "--plot", out_plot)
    assert result.exit_code == 0, result.output
    assert "verdict" in result.output and "matrix-free vs full Jacobian" in result.output
    rows = json.loads(out_json.read_text())["rows"]
    assert [(r["step"], r["seed"]) for r in rows] == [(0, 0), (3, 0)]
    assert {r["model"] for r in rows} == {str(model_dir)} and {r["sampler"] for r in rows} == {"dpm++2m"}
    for row in rows:  # 4x8x8 latents: full Jacobians by default, and the matrix-free value within 5% of theirs
        assert abs(row["relative_difference"]) < 0.05 and row["negative_eigenvalues"] >= 0 and row["verdict"]
    assert rows[-1]["margin"] is None  # DPM-Solver++'s last step lands on sigma 0: no floor
    assert Image.open(out_plot).size[0] > 100


def test_probe_with_prompts_and_no_full_jacobians(model_dir):
    result = run("probe", "--model", model_dir, "--steps", 3, "--guidance", 1, "-p", "a red circle", "--first", 1,
                 "--no-full-jacobian", "--iterations", 3)
    assert result.exit_code == 0, result.output
    assert "'a red circle'" in result.output and "neg eig" not in result.output
    assert "did not converge" in result.output  # 3 iterations: the table says so


@pytest.mark.parametrize("args,fragment", [
    (("--sampler", "wobble"), "wobble"),
    (("--steps", 3, "--at", 5), "step 5 is out of range"),
    (("--steps", 3, "--first", 4), "out of range"),
    (("--steps", 3, "--at", "x"), "whole numbers"),
])
def test_bad_inputs_are_one_line_errors(model_dir, args, fragment):
    result = run("probe", "--model", model_dir, *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], result.output


def test_unwritable_outputs_are_refused_before_any_work(tmp_path):
    for option in ("--json", "--plot"):
        result = entry_point("probe", "--model", tmp_path / "no-such-model", option, tmp_path)  # a folder
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "is a folder" in lines[0] and "Traceback" not in result.stderr, result.stderr
