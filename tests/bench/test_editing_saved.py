"""`bench editing --decoder SPEC --saved`: the scenes reach the edit as 8-bit files hold them, and the decoder
inversion with its options is the one that runs; a bad decoder option is refused in one line."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from diffinv.bench import editing
from diffinv.cli import app


@pytest.fixture
def edits(monkeypatch):
    """Every call of the bench's edit: (images, decoder given, result)."""
    calls = []

    def recording(pipe, images, *args, **kwargs):
        result = real(pipe, images, *args, **kwargs)
        calls.append((images.clone(), kwargs["decoder"], result))
        return result

    real = editing.run_edit
    monkeypatch.setattr(editing, "run_edit", recording)
    return calls


def on_8bit_grid(images: torch.Tensor) -> bool:
    levels = (images.double() + 1) * 127.5
    return bool(torch.allclose(levels, levels.round(), atol=1e-4))


def run(pipe, **options):
    return editing.run_editing_benchmark(pipe, n=2, samplers=[("ddim", 3)], guidances=[3.0], methods=["naive"],
                                         modes=["diffedit"], edits=["colour"], photos=[], progress=False, **options)


def test_saved_scenes_reach_the_decoder_inversion_with_its_options(pipe, edits):
    rows = run(pipe, decoder="gradient:iterations=2,clipped=false", saved=True)
    ((images, decoder, result),) = edits
    assert on_8bit_grid(images)
    assert (decoder.name, decoder.iterations, decoder.clipped) == ("gradient", 2, False)
    stage = result.inversion.decoder_result  # what actually ran
    assert stage.method == "gradient" and stage.iterations == 2 and stage.options["clipped"] is False
    (row,) = rows
    assert row["saved"] is True and row["decoder_label"] == "gradient:iterations=2,clipped=false"
    assert row["decoder_config"]["clipped"] is False and row["decoder_config"]["iterations"] == 2
    assert row["noise_nmse"] > 0 and row["latent_nmse_db"] < 0
    assert "decoder gradient:iterations=2,clipped=false, scenes saved as 8-bit files" in editing.format_rows(rows)


def test_without_saved_the_scenes_are_the_float_images_and_the_encoder_inverts(pipe, edits):
    rows = run(pipe)
    ((images, decoder, result),) = edits
    assert not on_8bit_grid(images)  # the generated images, clipped but never rounded
    assert decoder.name == "encoder" and result.inversion.decoder == "encoder"
    assert rows[0]["saved"] is False
    assert editing.format_rows(rows).splitlines()[0].endswith("edit success")  # the title as before


@pytest.mark.parametrize("decoder, message", [
    ("gradient:clipped=maybe", "clipped"),
    ("gradient:iters=3", "unknown option"),
    ("gradinet", "unknown decoder"),
])
def test_a_bad_decoder_is_one_line_and_no_file(model_dir, tmp_path, decoder, message):
    out = tmp_path / "rows.json"
    result = CliRunner().invoke(app, ["bench", "editing", "--model", str(model_dir), "--decoder", decoder, "--saved",
                                      "--json", str(out)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_the_command_passes_decoder_and_saved_on(model_dir, tmp_path):
    out = tmp_path / "rows.json"
    result = CliRunner().invoke(app, ["bench", "editing", "--model", str(model_dir), "--n", "1", "--samplers", "ddim:3",
                                      "--guidances", "3", "--methods", "naive", "--modes", "diffedit", "--edits", "colour",
                                      "--photos", "", "--decoder", "gradient-free:iterations=2,clipped=false", "--saved",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["rows"]
    assert row["saved"] is True and row["decoder"] == "gradient-free"
    assert row["decoder_config"]["clipped"] is False and row["decoder_config"]["iterations"] == 2
