"""Loading models and images: clear errors for what is missing or unusable."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from diffinv.models.loading import ModelNotFoundError, load
from diffinv.utils.images import ImageError, load_images
from diffinv.utils.metrics import nmse, psnr, ssim


def test_load_local_folder(model_dir):
    pipe = load(model_dir)
    assert pipe.vae_scale_factor == 2 and pipe.unet.dtype == torch.float32


def test_missing_folder_and_not_a_pipeline(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load(tmp_path / "nothing")
    with pytest.raises(ModelNotFoundError, match="no model_index.json"):
        load(tmp_path)


def test_offline_hub_id_names_the_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="'nobody/no-such-model' is not on this machine"):
        load("nobody/no-such-model")


def test_load_images_converts_and_checks(tmp_path):
    Image.new("RGBA", (16, 16), (255, 0, 0, 128)).save(tmp_path / "rgba.png")
    Image.new("RGB", (16, 16), (0, 0, 255)).save(tmp_path / "rgb.png")
    loaded = load_images([tmp_path / "rgba.png", tmp_path / "rgb.png"], factor=8)
    assert loaded.tensor.shape == (2, 3, 16, 16)
    assert loaded.notes == ["rgba.png: transparency composited on white"]  # was "converted", alpha dropped (#33)
    assert torch.allclose(loaded.tensor[1, 2], torch.ones(16, 16)) and torch.allclose(loaded.tensor[1, 0], -torch.ones(16, 16))
    Image.new("RGB", (24, 16)).save(tmp_path / "wide.png")
    with pytest.raises(ImageError, match="share a size"):
        load_images([tmp_path / "rgb.png", tmp_path / "wide.png"], factor=8)
    with pytest.raises(ImageError, match="not a multiple of the VAE factor 16"):
        load_images([tmp_path / "wide.png"], factor=16)
    resized = load_images([tmp_path / "wide.png"], factor=16, size=(32, 32), resize=True)
    assert resized.tensor.shape == (1, 3, 32, 32)


def test_metrics():
    target = torch.randn(2, 4, 8, 8)
    assert nmse(target, target) == 0.0
    assert nmse(torch.zeros_like(target), target) == pytest.approx(1.0)
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    noisy = (image + 0.1 * torch.randn_like(image)).clamp(-1, 1)
    assert 15 < psnr(noisy, image) < 35
    assert ssim(image, image) == pytest.approx(1.0)
    assert ssim(noisy, image) < 0.99
