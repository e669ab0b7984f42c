"""Reading and writing images as the pipelines see them: tensors [B, 3, H, W] in [-1, 1]."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

#: File suffixes read as images when a folder or glob names a dataset.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class ImageError(ValueError):
    """An image that cannot be used as given; the message says why and what to do."""


@dataclass
class LoadedImages:
    """A batch of images and what was changed to make them usable."""

    tensor: torch.Tensor
    notes: list[str] = field(default_factory=list)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> [3, H, W] float32 in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def tensor_to_pil(image: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] (or [3, H, W]) in [-1, 1] -> RGB PIL images (rounded like diffusers' postprocess)."""
    if image.ndim == 3:
        image = image[None]
    array = ((image.detach().float().cpu() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return [Image.fromarray(frame.permute(1, 2, 0).numpy()) for frame in array]


def open_image(path: str | Path) -> Image.Image:
    """A fully read PIL image, or an `ImageError` that names the file and says what is wrong."""
    path = Path(path)
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image") from None
    except (UnidentifiedImageError, OSError) as error:
        raise ImageError(f"{path}: not a readable image ({error.__class__.__name__})") from None


def load_mask(path: str | Path) -> torch.Tensor:
    """A mask image (any size; white = the region to edit) as float32 [1, 1, H, W] in [0, 1].

    Colour images are read as their luminance; a mask with no pixel at or above half intensity is
    refused, since it would select nothing.
    """
    image = open_image(path)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        alpha = np.asarray(image.getchannel("A"), dtype=np.float32)
        if alpha.min() < 255:  # a transparent mask marks its region with opacity
            return torch.from_numpy(alpha / 255.0)[None, None]
    mask = torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32) / 255.0)[None, None]
    if not (mask >= 0.5).any():
        raise ImageError(f"{path}: the mask is empty (no pixel at or above half intensity); white marks the region to edit")
    return mask


def load_images(
    paths: list[str | Path],
    factor: int,
    size: tuple[int, int] | None = None,
    resize: bool = False,
) -> LoadedImages:
    """Read image files into one batch, checking they can pass through a VAE with downsampling `factor`.

    Grayscale and RGBA images are converted to RGB (and a note says so). Images must share a size
    whose sides are multiples of `factor`; with `resize`, each is resized to `size` (the model's own
    size, when given) instead of being refused.
    """
    if not paths:
        raise ImageError("no image given")
    tensors, notes = [], []
    for path in paths:
        path = Path(path)
        image = open_image(path)
        if image.mode != "RGB":
            notes.append(f"{path.name}: converted from {image.mode} to RGB")
            image = image.convert("RGB")
        target = size if (resize and size) else None
        if resize and target is None:
            target = (image.width // factor * factor or factor, image.height // factor * factor or factor)
        if target is not None and image.size != tuple(target):
            notes.append(f"{path.name}: resized from {image.width}x{image.height} to {target[0]}x{target[1]}")
            image = image.resize(tuple(target), Image.Resampling.LANCZOS)
        if image.width % factor or image.height % factor:
            raise ImageError(
                f"{path}: size {image.width}x{image.height} is not a multiple of the VAE factor {factor}; "
                f"pass --resize to resize it"
            )
        tensors.append(pil_to_tensor(image))
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ImageError(f"images in one batch must share a size, got {sorted(s[1:] for s in shapes)}; pass --resize")
    return LoadedImages(torch.stack(tensors), notes)
