"""Image attacks for watermark robustness, with the Tree-Ring paper's default strengths.

Each attack takes a PIL image and one strength: JPEG quality 25, rotation 75 degrees, crop-and-resize
keeping 75% of each side, Gaussian blur of radius 4 px at 512 px (scaled to the image's width),
additive Gaussian noise of std 0.1 (on [0, 1] pixels), brightness factor 6 (the paper's colour jitter
range upper bound; applied as a fixed factor here). Specs are "name" or "name:strength".
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter


def jpeg(image: Image.Image, quality: float) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def rotation(image: Image.Image, degrees: float) -> Image.Image:
    return image.rotate(degrees, resample=Image.Resampling.BILINEAR)


def crop(image: Image.Image, keep: float) -> Image.Image:
    """Crop a centred window of `keep` x the sides, then resize back."""
    if not 0 < keep <= 1:
        raise ValueError(f"crop keeps a fraction in (0, 1], got {keep}")
    width, height = image.size
    new_width, new_height = max(1, round(width * keep)), max(1, round(height * keep))
    left, top = (width - new_width) // 2, (height - new_height) // 2
    return image.crop((left, top, left + new_width, top + new_height)).resize((width, height), Image.Resampling.BICUBIC)


def blur(image: Image.Image, radius_at_512: float) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius_at_512 * image.width / 512))


def noise(image: Image.Image, std: float, seed: int = 0) -> Image.Image:
    array = np.asarray(image, dtype=np.float64) / 255.0
    array = array + np.random.default_rng(seed).normal(0.0, std, array.shape)
    return Image.fromarray((array.clip(0, 1) * 255).round().astype(np.uint8))


def brightness(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(factor)


#: name -> (attack, default strength)
ATTACKS: dict[str, tuple[Callable[[Image.Image, float], Image.Image], float]] = {
    "jpeg": (jpeg, 25),
    "rotation": (rotation, 75),
    "crop": (crop, 0.75),
    "blur": (blur, 4),
    "noise": (noise, 0.1),
    "brightness": (brightness, 6),
}


def parse_attack(spec: str) -> tuple[str, float]:
    """ "name" or "name:strength" -> (name, strength), with the default strength when none is given."""
    name, _, value = spec.partition(":")
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    try:
        strength = float(value) if value else float(ATTACKS[name][1])
    except ValueError:
        raise ValueError(f"attack strength in {spec!r} is not a number") from None
    return name, strength


CLEAN = ("clean", "none", "")


def check_attack(spec: str) -> str:
    """Return `spec` if it names no attack ("clean") or a known one, else raise ValueError."""
    if spec not in CLEAN:
        parse_attack(spec)
    return spec


def apply_attack(image: Image.Image, spec: str) -> Image.Image:
    """Apply the attack named by `spec` ("clean" or "none" returns the image unchanged)."""
    if spec in CLEAN:
        return image
    name, strength = parse_attack(spec)
    return ATTACKS[name][0](image.convert("RGB"), strength)
