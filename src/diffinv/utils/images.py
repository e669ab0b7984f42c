"""Reading and writing images as the pipelines see them: tensors [B, 3, H, W] in [-1, 1]."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError



class ImageError(ValueError):
    """An image that cannot be used as given; the message says why and what to do."""


@dataclass
class LoadedImages:
    """A batch of images and what was changed to make them usable."""

    tensor: torch.Tensor
    notes: list[str] = field(default_factory=list)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> [3, H, W] float32 in [-1, 1], read as a viewer shows it (see `rgb_array`)."""
    array, _ = rgb_array(image)
    return _to_tensor(array)


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array / 127.5 - 1.0).permute(2, 0, 1).contiguous()


#: Modes holding more than 8 bits per pixel, with the value that means white.
_DEEP_MODES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0}


def rgb_array(image: Image.Image) -> tuple[np.ndarray, list[str]]:
    """An image as a viewer shows it: float32 [H, W, 3] in [0, 255], and the conversions that took.

    EXIF orientation is applied; an animated image gives its first frame; 16-bit (and 32-bit integer)
    grey is scaled from its full range, keeping its precision; float images are taken as [0, 1];
    transparency is composited on white; palette, grey, CMYK and other modes become RGB.
    """
    notes = []
    frames = max(getattr(image, "n_frames", 1), image.info.get("frames", 1))
    if frames > 1:
        image.seek(0)
        notes.append(f"first of {frames} frames taken")
    orientation = image.getexif().get(0x0112, 1)
    if orientation not in (1, None):
        image = ImageOps.exif_transpose(image)
        notes.append(f"EXIF orientation {orientation} applied")
    if image.mode in _DEEP_MODES or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            if values.size and (values.min() < 0 or values.max() > 1):
                notes.append("float pixels outside [0, 1] clipped")
            grey = values.clip(0, 1) * 255.0
        else:
            if image.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
                notes.append("32-bit pixels outside the 16-bit range clipped")
            grey = values.clip(0, 65535) * (255.0 / 65535.0)
            notes.append(f"{'16-bit' if image.mode != 'I' else '32-bit integer'} grey scaled from 0..65535 to 0..255 (kept in float)")
        return np.repeat(grey.astype(np.float32)[..., None], 3, axis=2), notes
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info) \
            or (image.mode in ("RGB", "L") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        if np.asarray(rgba.getchannel("A")).min() < 255:
            notes.append("transparency composited on white")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba).convert("RGB")
    elif image.mode != "RGB":
        notes.append(f"converted from {image.mode} to RGB")
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.float32), notes


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
            frames = getattr(opened, "n_frames", 1)
            opened.seek(0)
            opened.load()
            image = opened.copy()
            image.info["frames"] = frames  # the copy is one frame; `rgb_array` notes that it was the first
            return image
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


def resize_array(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float [H, W, 3] image in [0, 255] to `size` (width, height) with Lanczos, channel by channel
    in float, so 16-bit precision survives."""
    channels = [np.asarray(Image.fromarray(array[..., c], mode="F").resize(size, Image.Resampling.LANCZOS))
                for c in range(array.shape[2])]
    return np.stack(channels, axis=2).clip(0, 255).astype(np.float32)


def load_images(
    paths: list[str | Path],
    factor: int,
    size: tuple[int, int] | None = None,
    resize: bool = False,
) -> LoadedImages:
    """Read image files into one batch, checking they can pass through a VAE with downsampling `factor`.

    Each image is read as a viewer shows it (`rgb_array`), one note per image naming every conversion
    (orientation, frames, bit depth, transparency, mode, size). Images must share a size
    whose sides are multiples of `factor`; with `resize`, each is resized to `size` (the model's own
    size, when given) instead of being refused.
    """
    if not paths:
        raise ImageError("no image given")
    tensors, notes = [], []
    for path in paths:
        path = Path(path)
        image = open_image(path)
        array, conversions = rgb_array(image)
        target = size if (resize and size) else None
        if resize and target is None:
            target = (image.width // factor * factor or factor, image.height // factor * factor or factor)
        height, width = array.shape[:2]
        if target is not None and (width, height) != tuple(target):
            conversions.append(f"resized from {width}x{height} to {target[0]}x{target[1]}")
            array = resize_array(array, tuple(target))
            height, width = array.shape[:2]
        if width % factor or height % factor:
            raise ImageError(
                f"{path}: size {width}x{height} is not a multiple of the VAE factor {factor}; "
                f"pass --resize to resize it"
            )
        if conversions:
            notes.append(f"{path.name}: " + "; ".join(conversions))
        tensors.append(_to_tensor(array))
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ImageError(f"images in one batch must share a size, got {sorted(s[1:] for s in shapes)}; pass --resize")
    return LoadedImages(torch.stack(tensors), notes)
