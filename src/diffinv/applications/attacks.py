"""Image attacks for watermark robustness, as the Tree-Ring paper (Wen et al. 2023) and its code apply them.

Each attack takes a PIL image, one strength and a seed (the random ones draw from it, so a benchmark gives
image i the same draw in every class): JPEG quality 25; rotation by 75 degrees; a random resized crop of 75%
of the area at aspect ratio 3/4, resized back (torchvision's `RandomResizedCrop(scale=(s, s), ratio=(3/4, 3/4))`,
the code's `--crop_scale 0.75 --crop_ratio 0.75`); Gaussian blur of radius 4 px at 512 px (scaled to the
image's width); additive Gaussian noise of std 0.1 (on [0, 1] pixels); colour jitter of brightness 6: a
factor drawn uniformly from [max(0, 1 - 6), 1 + 6] = [0, 7] per image (torchvision's `ColorJitter(brightness=6)`).
Specs are "name" or "name:strength".

Until 2026-12-04 crop kept a centred 75% of each side (56% of the area) and brightness applied the fixed
factor 6, both harsher than the paper's; the README's tables say which they were measured with.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter


def jpeg(image: Image.Image, quality: float, seed: int = 0) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def rotation(image: Image.Image, degrees: float, seed: int = 0) -> Image.Image:
    return image.rotate(degrees, resample=Image.Resampling.BILINEAR)


#: Aspect ratio (width / height) of the crop window: the Tree-Ring code's `--crop_ratio 0.75`.
CROP_ASPECT = 0.75


def crop(image: Image.Image, scale: float, seed: int = 0) -> Image.Image:
    """Crop a window of `scale` x the area at aspect ratio 3/4 (clipped to the image) at a random position,
    then resize back (bilinear)."""
    check_strength("crop", scale)
    width, height = image.size
    area = width * height * scale
    new_width = max(1, min(width, round((area * CROP_ASPECT) ** 0.5)))
    new_height = max(1, min(height, round((area / CROP_ASPECT) ** 0.5)))
    rng = np.random.default_rng(seed)
    top, left = int(rng.integers(0, height - new_height + 1)), int(rng.integers(0, width - new_width + 1))
    window = image.crop((left, top, left + new_width, top + new_height))
    return window.resize((width, height), Image.Resampling.BILINEAR)


def blur(image: Image.Image, radius_at_512: float, seed: int = 0) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius_at_512 * image.width / 512))


def noise(image: Image.Image, std: float, seed: int = 0) -> Image.Image:
    array = np.asarray(image, dtype=np.float64) / 255.0
    array = array + np.random.default_rng(seed).normal(0.0, std, array.shape)
    return Image.fromarray((array.clip(0, 1) * 255).round().astype(np.uint8))


def brightness(image: Image.Image, jitter: float, seed: int = 0) -> Image.Image:
    """Scale brightness by a factor drawn uniformly from [max(0, 1 - jitter), 1 + jitter]."""
    check_strength("brightness", jitter)
    factor = np.random.default_rng(seed).uniform(max(0.0, 1.0 - jitter), 1.0 + jitter)
    return ImageEnhance.Brightness(image).enhance(factor)


#: name -> (attack(image, strength, seed), default strength)
ATTACKS: dict[str, tuple[Callable[[Image.Image, float, int], Image.Image], float]] = {
    "jpeg": (jpeg, 25),
    "rotation": (rotation, 75),
    "crop": (crop, 0.75),
    "blur": (blur, 4),
    "noise": (noise, 0.1),
    "brightness": (brightness, 6),
}


#: name -> allowed strengths (crop's lower end stands for "above 0").
STRENGTH_RANGES: dict[str, tuple[float, float]] = {
    "jpeg": (1, 100), "rotation": (-360, 360), "crop": (1e-6, 1), "blur": (0, float("inf")), "noise": (0, float("inf")),
    "brightness": (0, float("inf")),
}


def check_strength(name: str, strength: float) -> float:
    """`strength` if it is in the range `STRENGTH_RANGES` allows for attack `name`, else ValueError."""
    low, high = STRENGTH_RANGES[name]
    if not low <= strength <= high:
        raise ValueError(f"{name} strength must be in [{low}, {high}], got {strength:g}")
    return strength


def parse_attack(spec: str) -> tuple[str, float]:
    """ "name" or "name:strength" -> (name, strength), with the default strength when none is given."""
    name, _, value = spec.partition(":")
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    try:
        strength = float(value) if value else float(ATTACKS[name][1])
    except ValueError:
        raise ValueError(f"attack strength in {spec!r} is not a number") from None
    return name, check_strength(name, strength)


CLEAN = ("clean", "none", "")


def check_attack(spec: str) -> str:
    """Return `spec` if it names no attack ("clean") or a known one, else raise ValueError."""
    if spec not in CLEAN:
        parse_attack(spec)
    return spec


def apply_attack(image: Image.Image, spec: str, seed: int = 0) -> Image.Image:
    """Apply the attack named by `spec` ("clean" or "none" returns the image unchanged); the random attacks
    (crop position, noise, brightness factor) draw from `seed`."""
    if spec in CLEAN:
        return image
    name, strength = parse_attack(spec)
    return ATTACKS[name][0](image.convert("RGB"), strength, seed)
