"""Procedural captioned scenes ("a red circle on a blue background") and a checker that reads them back.

The renderer draws one shape on a background, anti-aliased by supersampling: flat colours (the first
two bundled models), or, for a textured scene, each region filled with a texture in shades of its
colour (grain, stripes, smooth blotches, dead leaves) and the shape at any rotation. Textures give the
data variance in every latent direction, which keeps the learnt sampler invertible. The checker
recovers background color, shape color and shape kind from any RGB image (rendered or generated)
using the renderer's own color table, so prompt adherence can be measured without a learned
classifier; its shape kind comes from a rotation-invariant fill ratio.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.measure import label, regionprops

from diffinv.bench.leaves import SIZE, leaf_radii

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
SUPERSAMPLE = 4
MARGIN = 4  # pixels kept free of the shape along every side, so the border is pure background
#: Largest distance from the centre to the shape's outline, in radii, over all rotations.
REACH: dict[str, float] = {"circle": 1.0, "square": 0.886 * 2**0.5, "triangle": 1.1 * 2**0.5}
#: Largest shading offset of a texture (0..255 units, the same on every channel): small enough that
#: every palette colour stays nearest to itself and the shape stays apart from its background.
TEXTURE_AMPLITUDE = 20.0
#: Largest per-channel offset of a "colour" texture, on top of the shared one (0..255 units).
CHROMA_AMPLITUDE = 8.0
#: Texture styles: "luminance" (one offset on every channel, clipped at 0 and 255: the third bundled model's
#: data) and "colour" (plus an independent offset per channel, reflected at 0 and 255 instead of clipped, so a
#: region near the rails, white or black, keeps variance in every colour direction and has no flat plateau).
TEXTURES: tuple[str, ...] = ("luminance", "colour")


def check_texture(texture: str) -> str:
    """Return `texture` if it is one of TEXTURES, else raise a ValueError listing them."""
    if texture not in TEXTURES:
        raise ValueError(f"unknown texture style {texture!r}; choose one of {', '.join(TEXTURES)}")
    return texture


@dataclass(frozen=True)
class Scene:
    """What one image shows: a shape of one color on a background of another, at a place and size."""

    color: str
    shape: str
    background: str
    cx: float = SIZE / 2
    cy: float = SIZE / 2
    radius: float = 14.0
    angle: float = 0.0  # rotation in radians (circles look the same at any angle)
    texture_seed: int | None = None  # None: flat colours; else the seed of both regions' textures
    texture: str = "luminance"  # the texture style, one of TEXTURES (used only with a texture seed)

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
                 combos: list[tuple[str, str, str]] | None = None, textured: bool = False,
                 texture: str = "luminance") -> Scene:
    """A scene with random size and position; its combo is `combo`, or drawn from `combos` (default: all).

    `textured` also draws a continuous rotation and a texture seed (flat scenes draw neither, so their
    random stream is the one the first two bundled models were trained on), in the style `texture`.
    """
    check_texture(texture)
    if combo is None:
        pool = combos if combos is not None else all_combos()
        combo = pool[int(rng.integers(len(pool)))]
    if not textured:
        radius = float(rng.uniform(9.0, 22.0))
        lo, hi = MARGIN + radius, SIZE - MARGIN - radius
        cx, cy = (float(rng.uniform(lo, hi)) for _ in range(2))
        return Scene(*combo, cx=cx, cy=cy, radius=radius)
    reach = REACH[combo[1]]
    radius = float(rng.uniform(9.0, min(22.0, (SIZE / 2 - MARGIN) / reach)))
    lo, hi = MARGIN + reach * radius, SIZE - MARGIN - reach * radius
    cx, cy = (float(rng.uniform(lo, hi)) for _ in range(2))
    angle = float(rng.uniform(0, 2 * np.pi)) if combo[1] != "circle" else 0.0
    return Scene(*combo, cx=cx, cy=cy, radius=radius, angle=angle, texture_seed=int(rng.integers(2**62)),
                 texture=texture)


def _shape_mask(shape: str, cx: float, cy: float, r: float, size: int, scale: int, angle: float = 0.0) -> np.ndarray:
    """Coverage in [0, 1] of each pixel by the shape (turned by `angle`), from `scale` x `scale` subsamples."""
    n = size * scale
    coords = (np.arange(n) + 0.5) / scale
    y, x = np.meshgrid(coords, coords, indexing="ij")
    dx, dy = x - cx, y - cy
    if angle:
        cos, sin = np.cos(angle), np.sin(angle)
        dx, dy = cos * dx + sin * dy, -sin * dx + cos * dy
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


def shading(rng: np.random.Generator, size: int = SIZE, amplitude: float = TEXTURE_AMPLITUDE) -> np.ndarray:
    """A random texture as brightness offsets [size, size] within +-amplitude: a sum of one to four of
    grain, stripes at any angle and frequency, smooth blotches (blurred noise) and dead leaves."""
    kinds = [k for k in ("grain", "stripes", "blotches", "leaves") if rng.random() < 0.5]
    if not kinds:
        kinds = [("grain", "stripes", "blotches", "leaves")[int(rng.integers(4))]]
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    field = np.zeros((size, size))
    for kind in kinds:
        strength = rng.uniform(0.3, 1.0) * amplitude
        if kind == "grain":
            field += rng.normal(0, strength / 3, (size, size))
        elif kind == "stripes":
            theta, period = rng.uniform(0, np.pi), rng.uniform(3.0, 16.0)
            phase = rng.uniform(0, 2 * np.pi)
            field += strength * np.sin(2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / period + phase)
        elif kind == "blotches":
            smooth = gaussian_filter(rng.normal(size=(size, size)), rng.uniform(1.5, 6.0), mode="wrap")
            field += strength * smooth / max(np.abs(smooth).max(), 1e-8)
        else:
            for radius in leaf_radii(rng, 60, r_min=2.0, r_max=24.0):
                cx, cy = rng.uniform(-radius, size + radius, 2)
                field[(x - cx) ** 2 + (y - cy) ** 2 <= radius**2] = strength * rng.uniform(-1, 1)
    return np.clip(field, -amplitude, amplitude)


def render(scene: Scene, size: int = SIZE) -> np.ndarray:
    """The scene as a uint8 RGB array [size, size, 3] (textured when the scene has a texture seed)."""
    coverage = _shape_mask(scene.shape, scene.cx, scene.cy, scene.radius, size, SUPERSAMPLE, scene.angle)[..., None]
    fg = np.array(PALETTE[scene.color], dtype=np.float64)
    bg = np.array(PALETTE[scene.background], dtype=np.float64)
    if scene.texture_seed is not None:
        rng = np.random.default_rng(scene.texture_seed)
        fg, bg = (_textured(rng, colour, size, scene.texture) for colour in (fg, bg))
    return np.round(np.clip(coverage * fg + (1 - coverage) * bg, 0, 255)).astype(np.uint8)


def _textured(rng: np.random.Generator, colour: np.ndarray, size: int, texture: str) -> np.ndarray:
    """One region's colour [size, size, 3] with a texture of the style `texture` (see TEXTURES)."""
    field = colour + shading(rng, size)[..., None]
    if texture == "luminance":
        return field
    field = field + np.stack([shading(rng, size, CHROMA_AMPLITUDE) for _ in range(3)], axis=-1)
    field = np.abs(field)  # reflect at 0 ...
    return 255 - np.abs(255 - field)  # ... and at 255


@dataclass(frozen=True)
class Reading:
    """What the checker sees in an image."""

    color: str | None
    shape: str | None
    background: str
    fill: float  # shape area / smallest enclosing rectangle's area (circle ~0.79, square ~1, triangle ~0.5)

    @property
    def combo(self) -> tuple[str | None, str | None, str]:
        return (self.color, self.shape, self.background)


_PALETTE_ARRAY = np.array([PALETTE[c] for c in COLORS], dtype=np.float64)


def nearest_color(rgb: np.ndarray) -> str:
    """Name of the palette color closest (Euclidean RGB) to one RGB triple."""
    return COLORS[int(np.argmin(((_PALETTE_ARRAY - rgb) ** 2).sum(axis=1)))]


def rectangle_fill(mask: np.ndarray, angles: int = 45) -> float:
    """Area of a pixel mask over the area of its smallest enclosing rectangle at any of `angles`
    rotations in [0, 90) degrees: the bounding-box fill ratio, made independent of the shape's rotation."""
    ys, xs = np.nonzero(mask)
    best = np.inf
    for theta in np.linspace(0, np.pi / 2, angles, endpoint=False):
        u = xs * np.cos(theta) + ys * np.sin(theta)
        v = -xs * np.sin(theta) + ys * np.cos(theta)
        best = min(best, (np.ptp(u) + 1) * (np.ptp(v) + 1))
    return float(len(xs) / best)


def classify_fill(fill: float) -> str:
    """Shape kind from the fill ratio of its bounding box."""
    if fill >= 0.9:
        return "square"
    if fill >= 0.64:
        return "circle"
    return "triangle"


def _blob(image: np.ndarray, threshold: float, min_area: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(image as float RGB, median border colour, the largest blob of pixels far from it or None)."""
    img = np.asarray(image, dtype=np.float64)[..., :3]
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    bg_rgb = np.median(border, axis=0)
    far = np.sqrt(((img - bg_rgb) ** 2).sum(axis=-1)) > threshold
    labels = label(far, connectivity=1)
    if labels.max() == 0:
        return img, bg_rgb, None
    blob = max(regionprops(labels), key=lambda p: p.area)
    return img, bg_rgb, (labels == blob.label) if blob.area >= min_area else None


def shape_region(image: np.ndarray, threshold: float = 50.0, min_area: int = 12) -> np.ndarray:
    """The pixels the checker reads as the shape (bool [H, W]; all False when it finds none)."""
    img, _, blob = _blob(image, threshold, min_area)
    return blob if blob is not None else np.zeros(img.shape[:2], dtype=bool)


def read_scene(image: np.ndarray, threshold: float = 50.0, min_area: int = 12) -> Reading:
    """Read background color (border pixels), shape color and shape kind from a uint8 RGB image.

    Pixels farther than `threshold` (RGB distance) from the background are the shape; its color is
    the palette color nearest their median, its kind comes from the largest blob's fill ratio of its
    smallest enclosing rectangle (`rectangle_fill`), so a rotated square still reads as a square.
    """
    img, bg_rgb, blob = _blob(image, threshold, min_area)
    background = nearest_color(bg_rgb)
    if blob is None:
        return Reading(None, None, background, 0.0)
    fill = rectangle_fill(blob)
    return Reading(nearest_color(np.median(img[blob], axis=0)), classify_fill(fill), background, fill)


#: How many (color, shape, background) combos the bundled model never saw in training.
N_HELDOUT_COMBOS = 24


def heldout_combos(seed: int = 1234) -> list[tuple[str, str, str]]:
    """24 (color, shape, background) combos never shown to the UNet: 8 per shape, chosen by `seed`."""
    rng = np.random.default_rng(seed)
    combos = all_combos()
    chosen: list[tuple[str, str, str]] = []
    for shape in SHAPES:
        pool = [c for c in combos if c[1] == shape]
        idx = rng.choice(len(pool), size=N_HELDOUT_COMBOS // len(SHAPES), replace=False)
        chosen += [pool[i] for i in sorted(idx)]
    return chosen


def train_combos(seed: int = 1234) -> list[tuple[str, str, str]]:
    """All combos except the held-out ones."""
    held = set(heldout_combos(seed))
    return [c for c in all_combos() if c not in held]
