"""Editing by inversion: prompt-to-prompt injection and DiffEdit blending on the shared sampler, masks, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import diffinv
from diffinv.applications.attention import AttentionInjection, changed_tokens, token_alignment
from diffinv.applications.editing import edit, prepare_mask
from diffinv.utils.images import ImageError, load_mask

SOURCE, TARGET = "a red circle on a blue background", "a green circle on a blue background"


@pytest.fixture(scope="module")
def image(pipe):
    return diffinv.generate(pipe, SOURCE, seed=2, steps=6, guidance=3.0).image


@pytest.mark.parametrize("mode", ["prompt-to-prompt", "diffedit"])
def test_same_prompt_reproduces_the_reconstruction_exactly(pipe, image, mode):
    """Exactly up to float32 rounding: the branches are rows of one batch, whose kernels may round apart."""
    result = edit(pipe, image, SOURCE, SOURCE, method="exact", mode=mode, steps=6, guidance=3.0)
    assert torch.allclose(result.edited_latent, result.reconstruction_latent, atol=1e-4, rtol=0)
    assert torch.allclose(result.edited, result.reconstruction, atol=1e-3, rtol=0)
    plain = diffinv.reconstruct(pipe, result.inversion, SOURCE)  # the source branch is the reconstruction
    # A batch of two rows against one row: 1.3e-4 apart on torch 2.13 (latents up to 0.16); a wrong branch is >1e-2 off.
    assert torch.allclose(result.reconstruction_latent, plain.latent.cpu(), atol=5e-4, rtol=0)


def test_attention_maps_are_really_injected(pipe, image):
    result = edit(pipe, image, SOURCE, TARGET, method="naive", steps=6, guidance=3.0)
    plain = diffinv.generate(pipe, TARGET, noise=result.inversion.noise, steps=6, guidance=3.0)
    assert result.injected_maps > 0
    assert (result.edited_latent - plain.latent.cpu()).abs().max() > 1e-3  # injection changed the edited branch
    off = edit(pipe, image, SOURCE, TARGET, method="naive", steps=6, guidance=3.0,
               mode_options={"cross_fraction": 0.0, "self_fraction": 0.0})
    assert off.injected_maps == 0
    assert torch.allclose(off.edited_latent, plain.latent.cpu(), atol=1e-4, rtol=0)  # no injection: plain regeneration


def test_diffedit_keeps_the_source_branch_outside_a_user_mask_of_another_size(pipe, image):
    mask = torch.zeros(1, 1, 23, 37)
    mask[..., 5:18, 10:30] = 1.0
    result = edit(pipe, image, SOURCE, TARGET, method="naive", mode="diffedit", mask=mask, steps=6, guidance=3.0)
    assert result.mask.shape == (1, 1, 8, 8) and result.mask_source == "given"
    assert result.image_mask.shape == (1, 1, 16, 16)
    outside = (1 - result.mask).bool().expand_as(result.edited_latent)
    assert torch.equal(result.edited_latent[outside], result.reconstruction_latent[outside])
    inside = result.mask.bool().expand_as(result.edited_latent)
    assert (result.edited_latent[inside] - result.reconstruction_latent[inside]).abs().max() > 1e-3
    assert {"background_psnr", "background_ssim", "reconstruction_psnr"} <= set(result.report)


def test_estimated_mask_marks_where_the_prompts_disagree(pipe, image):
    result = edit(pipe, image, SOURCE, TARGET, method="naive", mode="diffedit", steps=6, guidance=3.0)
    assert result.mask_source == "estimated"
    assert set(result.mask.unique().tolist()) <= {0.0, 1.0} and 0 < result.mask.mean() < 1


def test_local_blending_keeps_the_source_branch_outside_the_attention_mask(pipe, image):
    result = edit(pipe, image, SOURCE, TARGET, method="naive", steps=6, guidance=3.0, mode_options={"local_blend": 0.3})
    assert result.mask_source == "attention" and result.mask.shape == (1, 1, 8, 8)
    assert set(result.mask.unique().tolist()) <= {0.0, 1.0} and result.mask.sum() > 0
    outside = (1 - result.mask).bool().expand_as(result.edited_latent)
    if outside.any():  # the last step's mask: outside it the edited branch is the source branch
        assert torch.equal(result.edited_latent[outside], result.reconstruction_latent[outside])
    same = edit(pipe, image, SOURCE, SOURCE, method="naive", steps=6, guidance=3.0, inversion=result.inversion,
                mode_options={"local_blend": 0.3})
    assert same.mask.sum() == 0  # no changed words, nothing to edit
    assert torch.allclose(same.edited_latent, same.reconstruction_latent, atol=1e-4, rtol=0)


def test_blend_mask_is_the_union_of_both_branches_attention_regions():
    controller = AttentionInjection(torch.zeros(1, 4, dtype=torch.long), guided=True, cross_timesteps=set(),
                                    self_timesteps=set(), blend_words=torch.ones(2, 4))
    maps = torch.full((2, 64), 0.01)
    maps[0, 8 * 1 + 1] = 1.0  # source branch: the word at (1, 1) of an 8x8 map
    maps[1, 8 * 6 + 5] = 0.5  # edited branch: at (6, 5), weaker; each branch is scaled to its own maximum
    controller.word_maps[64] = maps
    mask = controller.blend_mask((16, 16), threshold=0.3)
    expected = torch.zeros(8, 8)
    expected[0:3, 0:3] = 1  # 3x3 max-pool around each peak
    expected[5:8, 4:7] = 1
    assert torch.equal(mask[0, 0], expected.repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert controller.blend_mask((16, 16), threshold=0.999).sum() == 2 * 9 * 4  # the peaks survive any threshold < 1
    with pytest.raises(RuntimeError, match="no cross-attention maps"):
        AttentionInjection(torch.zeros(1, 4, dtype=torch.long), True, set(), set()).blend_mask((16, 16), 0.3)


def test_changed_tokens_mark_the_swapped_words():
    swap = changed_tokens([0, 5, 6, 7, 1], [0, 5, 9, 7, 1], 8)
    assert swap[0].tolist() == [0, 0, 1, 0, 0, 0, 0, 0] and swap[1].tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
    inserted = changed_tokens([0, 5, 7, 1], [0, 5, 9, 8, 7, 1], 8)
    assert inserted[0].sum() == 0 and inserted[1].tolist() == [0, 0, 1, 1, 0, 0, 0, 0]
    assert changed_tokens([0, 5, 1], [0, 5, 1], 4).sum() == 0


def test_token_alignment():
    swap = token_alignment([0, 5, 6, 7, 1], [0, 5, 9, 7, 1], 8)
    assert swap.tolist() == list(range(8))  # a word swap maps every position to itself
    inserted = token_alignment([0, 5, 7, 1], [0, 5, 9, 7, 1], 8)
    assert inserted.tolist() == [0, 1, -1, 2, 3, 4, 5, 6]  # the new word keeps its own attention


def test_bad_inputs_are_refused(pipe, image, tmp_path):
    with pytest.raises(ValueError, match="target prompt is empty"):
        edit(pipe, image, SOURCE, "  ", steps=4)
    with pytest.raises(ValueError, match="unknown editing mode"):
        edit(pipe, image, SOURCE, TARGET, mode="paint", steps=4)
    with pytest.raises(ValueError, match="unknown option"):
        edit(pipe, image, SOURCE, TARGET, mode_options={"cross": 0.5}, steps=4)
    with pytest.raises(ValueError, match="local_blend .* must be in \\(0, 1\\)"):
        edit(pipe, image, SOURCE, TARGET, mode_options={"local_blend": 1.5}, steps=4)
    earlier = edit(pipe, image, SOURCE, TARGET, method="naive", steps=4, guidance=3.0).inversion
    with pytest.raises(ValueError, match="made at guidance 3.0, not 7.5"):
        edit(pipe, image, SOURCE, TARGET, steps=4, guidance=7.5, inversion=earlier)
    with pytest.raises(ValueError, match="made with the prompt"):
        edit(pipe, image, "a blue square", TARGET, steps=4, guidance=3.0, inversion=earlier)
    assert earlier.prompts == [SOURCE]
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        edit(pipe, image, SOURCE, TARGET, mode_options={"cross_fraction": 1.5}, steps=4)
    with pytest.raises(ValueError, match="finite values in \\[0, 1\\]"):
        prepare_mask(torch.full((8, 8), 255.0), 1, (8, 8))
    with pytest.raises(ValueError, match="selects nothing"):
        prepare_mask(torch.eye(64)[None, None] * 1.0, 1, (8, 8))
    with pytest.raises(ValueError, match="must be"):
        prepare_mask(torch.ones(2, 2, 1, 8, 8), 1, (8, 8))
    (tmp_path / "mask.txt").write_text("not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        load_mask(tmp_path / "mask.txt")
    Image.new("L", (9, 9), 0).save(tmp_path / "black.png")
    with pytest.raises(ImageError, match="empty"):
        load_mask(tmp_path / "black.png")


def test_cli_edit_writes_every_output_and_refuses_bad_input(model_dir, image, tmp_path):
    from diffinv.cli import app, quiet_libraries

    quiet_libraries()
    diffinv.utils.images.tensor_to_pil(image)[0].save(tmp_path / "image.png")
    Image.fromarray(np.pad(np.full((20, 20), 255, np.uint8), 10)).save(tmp_path / "mask.png")  # 40x40, any size
    runner = CliRunner()
    base = ["edit", str(tmp_path / "image.png"), "--model", str(model_dir), "--source-prompt", SOURCE, "--steps", "4",
            "--guidance", "3"]
    out = tmp_path / "out"
    result = runner.invoke(app, base + ["--target-prompt", TARGET, "--mode", "diffedit", "--mask", str(tmp_path / "mask.png"),
                                        "--method", "naive", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"edited.png", "reconstruction.png", "mask.png", "comparison.png", "report.json"}
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "diffedit" and report["mask_source"] == "given" and report["nfe"] > 0
    assert "background_psnr" in report
    for bad, message in [(["--target-prompt", ""], "target prompt is empty"),
                         (["--target-prompt", TARGET, "--mode", "paint"], "unknown editing mode"),
                         (["--target-prompt", TARGET, "--mask", str(tmp_path / "nope.png")], "no such file"),
                         (["--target-prompt", TARGET, "--mode-option", "cross_fraction=2"], "in [0, 1]")]:
        failed_out = tmp_path / "failed"
        result = runner.invoke(app, base + bad + ["--out", str(failed_out)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not failed_out.exists()  # nothing half-written


def test_editing_benchmark_rows(pipe):
    from diffinv.bench.editing import format_rows, run_editing_benchmark

    modes = ["prompt-to-prompt", "diffedit", "prompt-to-prompt:local_blend=0.3"]
    rows = run_editing_benchmark(pipe, n=2, samplers=[("ddim", 4)], guidances=[3.0], modes=modes,
                                 methods=["naive", "exact-aa", "true-noise"], photos=["coffee"], progress=False)
    assert len(rows) == 3 * 3 * 2 + 2 * 3  # methods x modes x (colour, shape) + the two inverting methods' photos
    assert {r["mode"] for r in rows} == set(modes)
    with pytest.raises(ValueError, match="local_blend .* must be in \\(0, 1\\)"):
        run_editing_benchmark(pipe, n=1, modes=["prompt-to-prompt:local_blend=2"], progress=False)
    truth = [r for r in rows if r["label"] == "true-noise"]
    assert {r["images"] for r in truth} == {"scenes"} and all(r["reconstruction_psnr"] > 60 for r in truth)
    scenes = [r for r in rows if r["images"] == "scenes"]
    assert all(0 <= r["success"] <= 1 and r["background_psnr"] > 0 and r["nfe"] > 0 for r in scenes)
    exact = [r for r in rows if r["label"] == "exact-aa"]
    naive = [r for r in rows if r["label"] == "naive"]
    assert min(r["nfe"] for r in exact) > max(r["nfe"] for r in naive)
    photo = [r for r in rows if r["images"] == "photos"]
    assert all(r["success"] is None and r["background_psnr"] is not None for r in photo)
    table = format_rows(rows)
    assert "bg PSNR" in table and "exact-aa" in table


def test_background_scores_skip_images_edited_whole():
    """An image whose edit region covers it whole has no background: it is left out of the background
    scores (counted), instead of blanking them for the batch."""
    from types import SimpleNamespace

    from diffinv.applications.editing import edit_scores

    image = torch.zeros(2, 3, 8, 8)
    edited = image.clone()
    edited[0] += 0.1  # off by 0.05 of the unit range everywhere: 26.0 dB
    edited[1] = 1.0
    background = torch.ones(2, 1, 8, 8)
    background[1] = 0
    scores = edit_scores(SimpleNamespace(reconstruction=image, edited=edited), image, background=background)
    assert scores["background_images"] == 1
    assert scores["background_psnr"] == pytest.approx(26.02, abs=0.01)
    none_left = edit_scores(SimpleNamespace(reconstruction=image, edited=edited), image, background=torch.zeros(2, 1, 8, 8))
    assert "background_psnr" not in none_left and none_left["background_images"] == 0
