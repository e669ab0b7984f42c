"""Training and evaluation data: rendered scenes, held-out caption combos, crops of scikit-image's photos.

Everything is made on the fly from a seed; nothing is downloaded. Images are float tensors
[B, 3, 64, 64] in [-1, 1].
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata

from diffinv.bench.leaves import leaves_batch
from diffinv.bench.scenes import SIZE, heldout_combos, random_scene, render, train_combos  # noqa: F401 (re-exported for the training code)

#: Color photos shipped inside scikit-image (no pooch download), split for the autoencoder.
TRAIN_PHOTOS: tuple[str, ...] = (
    "astronaut", "chelsea", "immunohistochemistry", "retina", "hubble_deep_field", "colorwheel", "logo",
    "camera", "coins", "moon", "page", "text", "clock", "grass", "gravel", "brick", "cell",
)
HELDOUT_PHOTOS: tuple[str, ...] = ("coffee", "rocket")
#: Captions of the UNet's non-scene images: generic words the tokenizer knows (never a scene's grammar).
PHOTO_CAPTION = "a photo"
LEAVES_CAPTION = "an image"


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] (or float in [0, 1]) -> float32 [B, 3, H, W] in [-1, 1]."""
    x = torch.from_numpy(np.asarray(images)).float()
    if x.max() > 1.5:
        x = x / 255.0
    return x.permute(0, 3, 1, 2) * 2 - 1


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3]."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return x.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()


def scene_batch(rng: np.random.Generator, n: int, combos: list[tuple[str, str, str]] | None = None,
                textured: bool = False, texture: str = "luminance"):
    """`n` random scenes (flat or textured, in the style `texture`), their uint8 images [n, 64, 64, 3] and
    their captions."""
    scenes = [random_scene(rng, combos=combos, textured=textured, texture=texture) for _ in range(n)]
    images = np.stack([render(s) for s in scenes])
    return scenes, images, [s.caption for s in scenes]


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a float RGB image in [0, 1] to size x size with an antialiasing (Lanczos) filter."""
    pil = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
    out = pil.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return np.asarray(out, dtype=np.float64) / 255.0


@lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """A scikit-image sample photo as float RGB [H, W, 3] in [0, 1] (gray photos repeated to RGB)."""
    img = getattr(skdata, name)()
    img = np.asarray(img, dtype=np.float64)
    if img.max() > 1.0:
        img = img / 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return img[..., :3]


def augment(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Random color-channel permutation, vertical flip and quarter turn of an RGB image."""
    image = image[..., rng.permutation(3)]
    if rng.random() < 0.5:
        image = image[::-1]
    return np.rot90(image, int(rng.integers(4)))


def random_crop(rng: np.random.Generator, photo: np.ndarray, size: int = SIZE) -> np.ndarray:
    """A square crop of random side (size .. the photo's short side) resized to size x size, maybe flipped."""
    h, w = photo.shape[:2]
    side = int(rng.integers(size, min(h, w) + 1))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = photo[top: top + side, left: left + side]
    if side != size:
        crop = resize(crop, size)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return crop


def photo_batch(rng: np.random.Generator, n: int, names: tuple[str, ...] = TRAIN_PHOTOS,
                augmented: bool = False) -> np.ndarray:
    """`n` random crops (float RGB in [0, 1]) from the named photos, optionally through `augment`."""
    crops = [random_crop(rng, load_photo(names[int(rng.integers(len(names)))])) for _ in range(n)]
    return np.stack([augment(rng, c) if augmented else c for c in crops])


def center_photo(name: str, size: int = SIZE) -> np.ndarray:
    """The largest centered square of a photo, resized to size x size (float RGB in [0, 1])."""
    photo = load_photo(name)
    h, w = photo.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return resize(photo[top: top + side, left: left + side], size)


def autoencoder_batch(rng: np.random.Generator, n: int, photo_fraction: float = 0.5,
                      augmented: bool = False, leaves_fraction: float = 0.0, textured: bool = False) -> torch.Tensor:
    """A mixed batch for the autoencoder, in [-1, 1]: rendered scenes (flat or `textured`), crops of the
    training photos (optionally through `augment`) and dead-leaves images, in the given fractions
    (scenes get the rest)."""
    n_photo = int(round(n * photo_fraction))
    n_leaves = min(n - n_photo, int(round(n * leaves_fraction)))
    n_scene = n - n_photo - n_leaves
    parts = []
    if n_scene:
        parts.append(to_tensor(scene_batch(rng, n_scene, textured=textured)[1]))
    if n_photo:
        parts.append(to_tensor(photo_batch(rng, n_photo, augmented=augmented)))
    if n_leaves:
        parts.append(to_tensor(leaves_batch(rng, n_leaves)))
    return torch.cat(parts)


def unet_batch(rng: np.random.Generator, n: int, combos: list[tuple[str, str, str]], photo_fraction: float = 0.125,
               leaves_fraction: float = 0.125, texture: str = "luminance") -> tuple[torch.Tensor, list[str]]:
    """Images in [-1, 1] and captions for the UNet: textured scenes of `combos` (their captions, textures in
    the style `texture`), augmented crops of the training photos ("a photo") and dead-leaves images
    ("an image"), in the given fractions."""
    n_photo = int(round(n * photo_fraction))
    n_leaves = min(n - n_photo, int(round(n * leaves_fraction)))
    _, scenes, captions = scene_batch(rng, n - n_photo - n_leaves, combos, textured=True, texture=texture)
    parts = [to_tensor(scenes)]
    if n_photo:
        parts.append(to_tensor(photo_batch(rng, n_photo, augmented=True)))
    if n_leaves:
        parts.append(to_tensor(leaves_batch(rng, n_leaves)))
    return torch.cat(parts), captions + [PHOTO_CAPTION] * n_photo + [LEAVES_CAPTION] * n_leaves
