"""Tree-Ring keys: embedding is exact in the noise, detection separates watermarked from clean, errors are clear."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from diffinv.applications.attacks import ATTACKS, apply_attack, check_attack, parse_attack
from diffinv.applications.watermark import (
    WatermarkKey,
    classify,
    correlation,
    default_radius,
    distance,
    embed,
    generate_watermarked,
    make_key,
    p_value,
    paper_radius,
    watermark_score,
)
from diffinv.cli import app
from diffinv.inversion import invert_sampler
from diffinv.models.denoiser import Denoiser
from diffinv.sampler.schedule import make_schedule


def test_key_round_trip_and_exact_embedding(tmp_path):
    key = make_key((4, 16, 16), seed=1)
    key.save(tmp_path / "key.safetensors")
    loaded = WatermarkKey.load(tmp_path / "key.safetensors")
    assert torch.equal(loaded.pattern, key.pattern) and torch.equal(loaded.mask, key.mask)
    assert (loaded.channel, loaded.radius, loaded.kind) == (3, 4, "ring")  # a quarter of the side by default
    assert paper_radius(16) == 3 and paper_radius(64) == 10 and default_radius(64) == 16
    noise = torch.randn(8, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    marked = embed(noise, key)
    assert distance(marked, key).max() < 1e-4
    assert (p_value(marked, key) < 1e-6).all()
    assert (distance(noise, key) > 5).all()
    assert p_value(noise, key).median() > 0.05  # a clean noise is not called watermarked
    assert torch.allclose(marked[:, :3], noise[:, :3], atol=1e-5)  # only the key's channel changes


def test_classification_picks_the_right_key():
    keys = [make_key((4, 16, 16), seed=seed) for seed in range(3)]
    noise = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    marked = torch.cat([embed(noise[i : i + 1], keys[i]) for i in range(3)])
    assert classify(marked + 0.2 * torch.randn_like(marked), keys).tolist() == [0, 1, 2]


def test_correlation_score_is_a_scale_free_matched_filter():
    key = make_key((4, 16, 16), seed=1)
    noise = torch.randn(8, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    marked = embed(noise, key)
    assert torch.allclose(correlation(marked, key), torch.ones(8), atol=1e-5)
    assert correlation(noise, key).abs().max() < 0.6  # a clean noise is about uncorrelated with the key
    # shrinking the recovered noise (as an imperfect inversion does) moves the distance, not the correlation
    assert torch.allclose(correlation(0.5 * marked, key), correlation(marked, key), atol=1e-6)
    assert (distance(0.5 * marked, key) > distance(marked, key) + 1).all()
    assert torch.equal(watermark_score(marked, key, "distance"), -distance(marked, key))
    assert torch.equal(watermark_score(marked, key), correlation(marked, key))  # the default: it detects best
    keys = [make_key((4, 16, 16), seed=seed) for seed in range(3)]
    three = torch.cat([embed(noise[i : i + 1], keys[i]) for i in range(3)])
    assert classify(0.3 * three + 0.05 * torch.randn_like(three), keys, score="correlation").tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown watermark score 'l2'; choose one of distance, correlation"):
        watermark_score(marked, key, "l2")


def test_detect_through_sampling_and_inversion(pipe):
    key = make_key((4, 8, 8), seed=2)
    marked = generate_watermarked(pipe, ["a red circle"] * 4, key, seed=1, steps=20, guidance=1.0)
    clean_noise = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    schedule = make_schedule("ddim", pipe.scheduler.config, 20)
    denoiser = Denoiser.from_pipeline(pipe, "a red circle", 4, 1.0, schedule.prediction_type)
    from diffinv.sampler.sampling import sample

    clean_latent = sample(denoiser, schedule, clean_noise).final
    recovered_marked = invert_sampler(denoiser, schedule, marked.latent).noise
    recovered_clean = invert_sampler(denoiser, schedule, clean_latent).noise
    assert distance(recovered_marked, key).max() < distance(recovered_clean, key).min()
    assert p_value(recovered_marked, key).max() < 0.01


@pytest.mark.parametrize("bad", [{"kind": "spiral"}, {"radius": 9}, {"channel": 4}])
def test_bad_keys(bad):
    with pytest.raises(ValueError):
        make_key((4, 16, 16), **bad)
    with pytest.raises(ValueError, match="key is for latents"):
        distance(torch.randn(1, 4, 8, 8), make_key((4, 16, 16)))


def test_attacks_change_images_and_parse():
    image = Image.fromarray((torch.rand(64, 64, 3) * 255).byte().numpy())
    for name in ATTACKS:
        attacked = apply_attack(image, name)
        assert attacked.size == image.size and attacked.mode == "RGB"
        assert attacked.tobytes() != image.tobytes(), name
    assert apply_attack(image, "clean") is image
    assert parse_attack("jpeg:50") == ("jpeg", 50.0) and parse_attack("rotation") == ("rotation", 75.0)
    for bad in ("blurr", "jpeg:high", "crop:0", "crop:1.5", "brightness:-1", "jpeg:0", "noise:-0.1"):
        with pytest.raises(ValueError):
            check_attack(bad)


def test_random_attacks_follow_the_tree_ring_code_and_their_seed():
    """Crop: 75% of the area at aspect 3/4 (48x64 of a 64x64 image) at a seeded position; brightness: a seeded
    factor in [0, 7]; the same seed gives the same image, another seed another draw."""
    grey = Image.fromarray(np.full((64, 64, 3), 30, dtype=np.uint8))
    factors = [np.asarray(apply_attack(grey, "brightness", seed=seed)).mean() / 30 for seed in range(40)]
    assert 0 <= min(factors) < 1 < 6 < max(factors) <= 7 + 0.1
    assert apply_attack(grey, "brightness:0", seed=5).tobytes() == grey.tobytes()
    columns = np.zeros((64, 64, 3), dtype=np.uint8)
    columns[:, :, 0] = np.arange(64, dtype=np.uint8)[None, :] * 4  # red encodes the column, constant down a column
    windows = []
    for seed in range(20):
        cropped = np.asarray(apply_attack(Image.fromarray(columns), "crop", seed=seed)).astype(float)[..., 0] / 4
        assert np.allclose(cropped[0], cropped[-1])  # the whole height is kept: the window is 48 wide, 64 high
        assert 44 <= cropped[0].max() - cropped[0].min() <= 48
        windows.append(round(cropped[0].min()))
    assert len(set(windows)) > 5 and min(windows) >= 0 and max(windows) <= 16
    noisy = Image.fromarray((torch.rand(64, 64, 3) * 255).byte().numpy())
    for name in ("crop", "noise", "brightness"):
        assert apply_attack(noisy, name, seed=3).tobytes() == apply_attack(noisy, name, seed=3).tobytes()
        assert apply_attack(noisy, name, seed=3).tobytes() != apply_attack(noisy, name, seed=4).tobytes()


def test_cli_embed_and_detect(model_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "wm"
    result = runner.invoke(app, ["watermark", "embed", "--model", str(model_dir), "--prompt", "a red circle",
                                 "--steps", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"image.png", "key.safetensors", "noise.safetensors", "latent.safetensors", "report.json"}
    assert WatermarkKey.load(out / "key.safetensors").radius == 2
    result = runner.invoke(app, ["watermark", "detect", str(out / "image.png"), "--key", str(out / "key.safetensors"),
                                 "--model", str(model_dir), "--steps", "4", "--attack", "jpeg:50"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["images"][0]["attack"] == "jpeg:50" and 0.0 <= report["images"][0]["p_value"] <= 1.0
    result = runner.invoke(app, ["watermark", "detect", str(out / "image.png"), "--key", str(out / "image.png"),
                                 "--model", str(model_dir)])
    assert result.exit_code == 2 and "error:" in result.output


def test_watermark_benchmark_rows_and_json(model_dir, tmp_path):
    from diffinv.utils.metrics import auc, tpr_at_fpr

    assert auc([3, 4], [1, 2]) == 1.0 and auc([1, 2], [3, 4]) == 0.0
    assert tpr_at_fpr([0.1, 0.2, 5.0], [1.0, 2.0, 3.0]) == pytest.approx(2 / 3)
    runner = CliRunner()
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "watermark", "--model", str(model_dir), "--n", "3", "--steps", "3",
                                 "--pipelines", "encoder+naive", "--attacks", "clean,jpeg", "--known-prompt", "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [(row["attack"], row["pipeline"]) for row in rows] == [("clean", "encoder+naive"), ("jpeg", "encoder+naive")]
    for row in rows:
        assert 0 <= row["auc"] <= 1 and 0 <= row["accuracy"] <= 1 and row["nfe"] == 3 and row["peak_memory_bytes"] >= 0
    assert "TPR@1%FPR" in result.output
    result = runner.invoke(app, ["bench", "watermark", "--model", str(model_dir), "--pipelines", "encoder"])
    assert result.exit_code == 2 and "DECODER+METHOD" in result.output
    result = runner.invoke(app, ["bench", "watermark", "--model", str(model_dir), "--pipelines", "encoder+exact:anderson=2,sweeps=0"])
    assert result.exit_code == 2 and "sweeps" in result.output  # options are checked before any image is made
    from diffinv.bench.watermark import parse_pipeline
    from diffinv.decoder import GradientFree
    from diffinv.inversion import Exact

    assert parse_pipeline("gradient-free+exact:anderson=2,stall=10") == (GradientFree(), Exact(anderson=2, stall=10))
    assert parse_pipeline("gradient-free:clipped=false+naive")[0] == GradientFree(clipped=False)
    out = tmp_path / "options.json"
    result = runner.invoke(app, ["bench", "watermark", "--model", str(model_dir), "--n", "2", "--steps", "3", "--attacks", "clean",
                                 "--pipelines", "encoder+naive,encoder+exact:anderson=2,tol=1e-5", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert [row["pipeline"] for row in json.loads(out.read_text())["rows"]] == ["encoder+naive", "encoder+exact:anderson=2,tol=1e-5"]
    out = tmp_path / "correlation.json"
    result = runner.invoke(app, ["bench", "watermark", "--model", str(model_dir), "--n", "2", "--steps", "3", "--attacks", "clean",
                                 "--pipelines", "encoder+naive", "--score", "distance", "--radius", "3", "--json", str(out)])
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())["rows"][0]
    assert (row["score"], row["radius"], row["default_radius"]) == ("distance", 3, 2) and 0 <= row["auc"] <= 1
    assert "(n=2 per class, score distance, key radius 3)" in result.output  # the title names what is not the default
    for bad, message in ((["--score", "l2"], "unknown watermark score"), (["--radius", "0"], "--radius must be at least 1"),
                         (["--radius", "9"], "radius 9 must be between")):
        result = runner.invoke(app, ["bench", "watermark", "--model", str(model_dir), "--n", "2", "--steps", "3",
                                     "--attacks", "clean", "--pipelines", "encoder+naive", *bad])
        assert result.exit_code == 2 and message in result.output, result.output
