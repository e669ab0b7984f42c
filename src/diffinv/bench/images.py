"""Image sets for the reconstruction benchmark, all offline: a folder, scikit-image's photos, white-area
test images, and images the model generates itself.

Every image comes out square at the model's size, as a [3, S, S] float32 tensor in [-1, 1]: photos are
center-cropped to a square and resized with Lanczos.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffinv.utils.images import ImageError, load_images, pil_to_tensor, tensor_to_pil
from diffinv.utils.sources import IMAGE_SUFFIXES

#: The scikit-image photos `--images skimage` uses (all ship inside the package; grayscale ones become RGB).
SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut", "camera", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "coins",
    "clock", "moon",
)
#: The white-area images `--images white` makes (mostly white with a small object), for the EasyInv paper's
#: observation that ReNoise turns such images black.
WHITE_IMAGES: tuple[str, ...] = ("white-disc", "white-coffee", "white-astronaut", "horse")
#: Prompts `generated_images` cycles through (the bundled model's caption style; any model can draw them).
GENERATION_PROMPTS: tuple[str, ...] = (
    "a red circle on a white background", "a blue square on a yellow background",
    "a green triangle on a black background", "a white circle on a purple background",
)


@dataclass
class BenchImage:
    """One benchmark image: a name, the set it belongs to (for per-set means), the image [3, S, S] in [-1, 1],
    and the prompt it was generated from (generated images only)."""

    name: str
    image: torch.Tensor
    group: str = "folder"
    prompt: str | None = None


def square(image: Image.Image, size: int) -> Image.Image:
    """Center-crop to a square and resize to size x size (Lanczos); RGB."""
    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image if side == size else image.resize((size, size), Image.Resampling.LANCZOS)


def _skimage_array(name: str) -> np.ndarray:
    import skimage.data

    array = np.asarray(getattr(skimage.data, name)())
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return array[..., :3]


def skimage_images(size: int, names: Sequence[str] = SKIMAGE_PHOTOS) -> list[BenchImage]:
    """scikit-image's bundled photos, square at `size`."""
    return [BenchImage(name, pil_to_tensor(square(Image.fromarray(_skimage_array(name)), size)), "skimage") for name in names]


def _on_white(size: int, patch: Image.Image, fraction: float) -> Image.Image:
    """A white size x size canvas with `patch` squared to `fraction` of the side, centered."""
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    side = max(1, round(size * fraction))
    canvas.paste(square(patch, side), ((size - side) // 2, (size - side) // 2))
    return canvas


def white_images(size: int) -> list[BenchImage]:
    """Mostly white images with a small object: a red disc, a small coffee cup photo, a small astronaut, the
    scikit-image horse silhouette (black on white)."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    disc = (xx - size * 0.5) ** 2 + (yy - size * 0.55) ** 2 <= (size * 0.12) ** 2
    canvas = np.full((size, size, 3), 255, dtype=np.uint8)
    canvas[disc] = (210, 30, 30)
    made = {
        "white-disc": Image.fromarray(canvas),
        "white-coffee": _on_white(size, Image.fromarray(_skimage_array("coffee")), 0.35),
        "white-astronaut": _on_white(size, Image.fromarray(_skimage_array("astronaut")), 0.3),
        "horse": square(Image.fromarray(_skimage_array("horse")), size),
    }
    return [BenchImage(name, pil_to_tensor(made[name]), "white") for name in WHITE_IMAGES]


def panning_frames(size: int, count: int, photo: str = "astronaut", overscan: float = 1.5) -> torch.Tensor:
    """A `count`-frame "video" [count, 3, size, size] in [-1, 1]: a size x size window panning diagonally
    across one scikit-image photo (squared to `overscan` x size), for decoder inversion at video scale."""
    if size < 8 or count < 1:
        raise ValueError(f"panning frames need size >= 8 and count >= 1, got size {size}, count {count}")
    canvas = square(Image.fromarray(_skimage_array(photo)), round(size * overscan))
    travel = canvas.width - size
    offsets = [round(travel * k / max(1, count - 1)) for k in range(count)]
    return torch.stack([pil_to_tensor(canvas.crop((o, o, o + size, o + size))) for o in offsets])


def folder_images(folder: str | Path, size: int) -> list[BenchImage]:
    """Every image file in `folder` (sorted by name), square at `size`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: no such folder (give a folder of images, 'skimage' or 'white')")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ImageError(f"{folder}: no image files in it ({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for path in paths:
        loaded = tensor_to_pil(load_images([path], 1).tensor)[0]  # reads and checks the file, gives RGB
        images.append(BenchImage(path.stem, pil_to_tensor(square(loaded, size))))
    return images


def generated_images(
    pipe, count: int, prompts: Sequence[str] = GENERATION_PROMPTS, sampler: str | None = None, steps: int = 50, guidance: float = 7.5, seed: int = 0
) -> list[BenchImage]:
    """`count` images the model generates from seeds seed, seed+1, ... cycling through `prompts`."""
    from diffinv.pipeline import generate

    images = []
    for index in range(count):
        prompt = prompts[index % len(prompts)]
        result = generate(pipe, prompt, seed=seed + index, sampler=sampler, steps=steps, guidance=guidance)
        images.append(BenchImage(f"generated-{seed + index}", result.image[0].float().cpu(), "generated", prompt))
    return images


def image_sources(spec: str, size: int) -> list[BenchImage]:
    """Images named by `spec`: comma-separated 'skimage', 'white' and/or folder paths."""
    images: list[BenchImage] = []
    for part in filter(None, (item.strip() for item in spec.split(","))):
        if part == "skimage":
            images += skimage_images(size)
        elif part == "white":
            images += white_images(size)
        else:
            images += folder_images(part, size)
    return images
