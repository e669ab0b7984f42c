"""The training package: renderer and checker, held-out split, resumable smoke runs, export, bundled weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from diffinv.train.data import autoencoder_batch, heldout_combos, train_combos
from diffinv.train.leaves import leaf_radii, leaves_batch
from diffinv.train.scenes import COLORS, PALETTE, SHAPES, Scene, all_combos, random_scene, read_scene, render

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "diffinv" / "weights" / "tiny"
FIRST_VERSION = Path(__file__).resolve().parents[1] / "models" / "tiny-v1"


@pytest.mark.parametrize("shape", SHAPES)
def test_renderer_draws_prompted_colors_and_shape(shape):
    scene = Scene("red", shape, "blue", cx=30, cy=34, radius=12)
    image = render(scene)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert tuple(image[34, 30]) == PALETTE["red"]
    assert tuple(image[0, 0]) == tuple(image[-1, -1]) == PALETTE["blue"]
    assert read_scene(image).combo == ("red", shape, "blue")


def test_combos_cover_requested_vocabulary():
    combos = all_combos()
    assert {"red", "green", "blue", "yellow", "white", "black", "orange", "purple"} <= set(COLORS)
    assert {"circle", "square", "triangle"} <= set(SHAPES)
    assert all(c != b for c, _, b in combos)
    assert len(combos) == len(COLORS) * (len(COLORS) - 1) * len(SHAPES)


def test_checker_reads_random_renders():
    rng = np.random.default_rng(0)
    scenes = [random_scene(rng) for _ in range(300)]
    readings = [read_scene(render(s)) for s in scenes]
    assert all(r.color == s.color and r.background == s.background for r, s in zip(readings, scenes))
    assert np.mean([r.shape == s.shape for r, s in zip(readings, scenes)]) >= 0.98
    noisy = [read_scene(np.clip(render(s) + rng.normal(0, 10, (64, 64, 3)), 0, 255)) for s in scenes[:100]]
    assert np.mean([r.combo == s.combo for r, s in zip(noisy, scenes)]) >= 0.95


def test_heldout_split():
    held, train = heldout_combos(), train_combos()
    assert len(held) == len(set(held)) == 24 and not set(held) & set(train)
    assert set(held) | set(train) == set(all_combos())
    for color in COLORS:  # every word is still seen in both roles during training
        assert any(c == color for c, _, _ in train) and any(b == color for _, _, b in train)


def test_autoencoder_batch_range():
    x = autoencoder_batch(np.random.default_rng(0), 6)
    assert x.shape == (6, 3, 64, 64) and x.min() >= -1 and x.max() <= 1
    mixed = autoencoder_batch(np.random.default_rng(0), 8, photo_fraction=0.25, augmented=True, leaves_fraction=0.5)
    assert mixed.shape == (8, 3, 64, 64) and mixed.min() >= -1 and mixed.max() <= 1


def test_checkpoints_from_before_configurable_latent_channels_load_as_4_channels():
    from diffinv.train.vae import stored_arch

    old = stored_arch({"arch": {"channels": [32, 64, 64], "layers_per_block": 1, "groups": 16}})
    new = stored_arch({"arch": {"channels": [32, 64, 64], "latent_channels": 8}})
    assert old["latent_channels"] == 4 and new["latent_channels"] == 8


def test_dead_leaves_are_seeded_varied_and_in_range():
    first = leaves_batch(np.random.default_rng(5), 4)
    again = leaves_batch(np.random.default_rng(5), 4)
    assert first.shape == (4, 64, 64, 3) and first.min() >= 0 and first.max() <= 1
    assert np.array_equal(first, again)  # same seed, same images: training stays reproducible
    assert all(image.std() > 0.05 for image in first)  # leaves of many colours, not a flat field
    radii = leaf_radii(np.random.default_rng(0), 20000, 1.0, 40.0)
    assert radii.min() >= 1.0 and radii.max() <= 40.0
    assert np.mean(radii < 2.0) > 0.7  # density ~ r^-3: most leaves are small (P(r < 2) = 0.75)


def test_smoke_train_resume_export(tmp_path, capsys):
    from diffinv.train.export import export
    from diffinv.train.unet import train_unet
    from diffinv.train.vae import finetune_decoder, train_vae

    torch.set_num_threads(1)
    tiny_vae = dict(channels=(8, 16, 16), groups=4)
    train_vae(tmp_path / "vae", steps=3, batch=2, until=2, **tiny_vae)  # stops early at step 2
    assert (tmp_path / "vae" / "step_0000002.pt").exists()
    assert not (tmp_path / "vae" / "step_0000003.pt").exists()
    train_vae(tmp_path / "vae", steps=3, batch=2, **tiny_vae)  # resumes at step 2, does one more
    assert (tmp_path / "vae" / "step_0000003.pt").exists()
    assert "at step 2" in capsys.readouterr().out
    finetune_decoder(tmp_path, steps=2, batch=2)
    assert (tmp_path / "vae_decoder" / "step_0000002.pt").exists()
    tiny_unet = dict(channels=(16, 32, 32), text_width=32, text_layers=1)
    train_unet(tmp_path, steps=2, batch=2, n_scenes=8, **tiny_unet)
    train_unet(tmp_path, steps=3, batch=2, n_scenes=8, **tiny_unet)
    assert "at step 2" in capsys.readouterr().out
    assert (tmp_path / "unet" / "step_0000003.pt").exists()
    folder = export(tmp_path, tmp_path / "export")
    assert (folder / "model_index.json").exists()
    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    assert pipe.unet.dtype == torch.float32
    image = pipe("a red circle on a blue background", num_inference_steps=2, height=64, width=64,
                 output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 64, 64, 3)


@pytest.mark.parametrize("folder", [BUNDLED, FIRST_VERSION], ids=["tiny", "tiny-v1"])
def test_bundled_weights_generate(folder):
    sizes = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert sizes <= 15 * 2**20
    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    assert pipe.vae.config.latent_channels >= 4 and 64 // factor >= 16  # the floor: 4x16x16 latents
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle on a blue background", num_inference_steps=10, guidance_scale=7.5,
                 output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 64, 64, 3)
    reading = read_scene((image[0] * 255).round().astype(np.uint8))
    assert (reading.color, reading.background) == ("red", "blue")


def test_score_and_table():
    from diffinv.train.evaluate import format_table, score

    combos = [("red", "circle", "blue"), ("green", "square", "white")]
    readings = [read_scene(render(Scene(*c))) for c in combos]
    result = score(readings, combos)
    assert result["all"] == result["colors"] == 1.0 and result["samples"] == 2
    assert result["shape_confusion"] == {"circle": {"circle": 1}, "square": {"square": 1}}
    table = format_table(dict(model="m", scheduler="DDIMScheduler", steps=50, guidance=7.5,
                              adherence_heldout=result, checker_on_renders=result,
                              autoencoder_psnr_db={"scenes_heldout": 31.0}))
    assert "adherence_heldout" in table and "31.00" in table
