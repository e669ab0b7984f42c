"""Procedural captioned scenes ("a red circle on a blue background") and a checker that reads them back.

The renderer draws one flat-colored shape on a flat background, anti-aliased by supersampling. The
checker recovers background color, shape color and shape kind from any RGB image (rendered or
generated) using the renderer's own color table, so prompt adherence can be measured without a
learned classifier.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from skimage.measure import label, regionprops

#: The renderer's color table (RGB, 0..255). Captions use these names.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (250, 230, 40),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "orange": (250, 130, 0),
    "purple": (140, 50, 180),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZE = 64
SUPERSAMPLE = 4
MARGIN = 4  # pixels kept free of the shape along every side, so the border is pure background


@dataclass(frozen=True)
class Scene:
    """What one image shows: a shape of one color on a background of another, at a place and size."""

    color: str
    shape: str
    background: str
    cx: float = SIZE / 2
    cy: float = SIZE / 2
    radius: float = 14.0

    @property
    def combo(self) -> tuple[str, str, str]:
        return (self.color, self.shape, self.background)

    @property
    def caption(self) -> str:
        return caption(self.color, self.shape, self.background)


def caption(color: str, shape: str, background: str) -> str:
    """The prompt for a scene: 'a {color} {shape} on a {background} background'."""
    return f"a {color} {shape} on a {background} background"


def all_combos() -> list[tuple[str, str, str]]:
    """Every (color, shape, background) with shape color different from background color."""
    return [(c, s, b) for c, s, b in itertools.product(COLORS, SHAPES, COLORS) if c != b]


def random_scene(rng: np.random.Generator, combo: tuple[str, str, str] | None = None,
                 combos: list[tuple[str, str, str]] | None = None) -> Scene:
    """A scene with random size and position; its combo is `combo`, or drawn from `combos` (default: all)."""
    if combo is None:
        pool = combos if combos is not None else all_combos()
        combo = pool[int(rng.integers(len(pool)))]
    radius = float(rng.uniform(9.0, 22.0))
    lo, hi = MARGIN + radius, SIZE - MARGIN - radius
    cx, cy = (float(rng.uniform(lo, hi)) for _ in range(2))
    return Scene(*combo, cx=cx, cy=cy, radius=radius)


def _shape_mask(shape: str, cx: float, cy: float, r: float, size: int, scale: int) -> np.ndarray:
    """Coverage in [0, 1] of each pixel by the shape, from `scale` x `scale` subsamples per pixel."""
    n = size * scale
    coords = (np.arange(n) + 0.5) / scale
    y, x = np.meshgrid(coords, coords, indexing="ij")
    dx, dy = x - cx, y - cy
    if shape == "circle":
        inside = dx**2 + dy**2 <= r**2
    elif shape == "square":
        half = r * 0.886  # same area as the circle of radius r
        inside = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    elif shape == "triangle":
        # upright isosceles triangle with its bounding box centered at (cx, cy)
        half = r * 1.1
        t = (dy + half) / (2 * half)  # 0 at apex, 1 at base
        inside = (t >= 0) & (t <= 1) & (np.abs(dx) <= t * half)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    return inside.reshape(size, scale, size, scale).mean(axis=(1, 3))


def render(scene: Scene, size: int = SIZE) -> np.ndarray:
    """The scene as a uint8 RGB array [size, size, 3]."""
    coverage = _shape_mask(scene.shape, scene.cx, scene.cy, scene.radius, size, SUPERSAMPLE)[..., None]
    fg = np.array(PALETTE[scene.color], dtype=np.float64)
    bg = np.array(PALETTE[scene.background], dtype=np.float64)
    return np.round(coverage * fg + (1 - coverage) * bg).astype(np.uint8)


@dataclass(frozen=True)
class Reading:
    """What the checker sees in an image."""

    color: str | None
    shape: str | None
    background: str
    fill: float  # shape area / bounding-box area (circle ~0.79, square ~1, triangle ~0.5)

    @property
    def combo(self) -> tuple[str | None, str | None, str]:
        return (self.color, self.shape, self.background)


_PALETTE_ARRAY = np.array([PALETTE[c] for c in COLORS], dtype=np.float64)


def nearest_color(rgb: np.ndarray) -> str:
    """Name of the palette color closest (Euclidean RGB) to one RGB triple."""
    return COLORS[int(np.argmin(((_PALETTE_ARRAY - rgb) ** 2).sum(axis=1)))]


def classify_fill(fill: float) -> str:
    """Shape kind from the fill ratio of its bounding box."""
    if fill >= 0.9:
        return "square"
    if fill >= 0.64:
        return "circle"
    return "triangle"


def read_scene(image: np.ndarray, threshold: float = 50.0, min_area: int = 12) -> Reading:
    """Read background color (border pixels), shape color and shape kind from a uint8 RGB image.

    Pixels farther than `threshold` (RGB distance) from the background are the shape; its color is
    the palette color nearest their median, its kind comes from the largest blob's fill ratio.
    """
    img = np.asarray(image, dtype=np.float64)[..., :3]
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    bg_rgb = np.median(border, axis=0)
    background = nearest_color(bg_rgb)
    far = np.sqrt(((img - bg_rgb) ** 2).sum(axis=-1)) > threshold
    labels = label(far, connectivity=1)
    if labels.max() == 0:
        return Reading(None, None, background, 0.0)
    blob = max(regionprops(labels), key=lambda p: p.area)
    if blob.area < min_area:
        return Reading(None, None, background, 0.0)
    pixels = img[labels == blob.label]
    color = nearest_color(np.median(pixels, axis=0))
    fill = float(blob.area / blob.area_bbox)
    return Reading(color, classify_fill(fill), background, fill)
