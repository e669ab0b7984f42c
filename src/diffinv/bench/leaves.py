"""Dead-leaves images: procedural pictures with the statistics of natural photos, for the autoencoder.

A dead-leaves image stacks many opaque disks whose radii follow a power law (density ~ r^-3), so
edges, occlusions and regions appear at every scale, as in photos. Each leaf gets a random color, a
random linear shading and, for some, a striped texture; the whole image is sometimes blurred and
grainy. A handful of scikit-image photos cannot teach a 12x-compressing autoencoder what real
images look like; endless dead-leaves images (made from a seed, nothing downloaded) can.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

SIZE = 64  #: side in pixels of every training image (scenes, leaves, photo crops)


def leaf_radii(rng: np.random.Generator, n: int, r_min: float = 1.0, r_max: float = 40.0) -> np.ndarray:
    """`n` radii with density ~ r^-3 on [r_min, r_max] (inverse-CDF sampling)."""
    u = rng.random(n)
    return 1.0 / np.sqrt(u / r_max**2 + (1 - u) / r_min**2)


def dead_leaves(rng: np.random.Generator, size: int = SIZE, n_leaves: int = 500) -> np.ndarray:
    """One dead-leaves image, float RGB [size, size, 3] in [0, 1]."""
    image = np.tile(rng.random(3), (size, size, 1))
    tint = rng.random(3)  # a shared hue, so images have a dominant color as photos often do
    for radius in leaf_radii(rng, n_leaves):  # painted in random order: later leaves occlude earlier ones
        cx, cy = rng.uniform(-radius, size + radius, 2)
        x0, x1 = max(0, int(cx - radius)), min(size, int(cx + radius) + 2)
        y0, y1 = max(0, int(cy - radius)), min(size, int(cy + radius) + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
        if not inside.any():
            continue
        mix = rng.uniform(0.2, 0.9)
        color = ((1 - mix) * tint + mix * rng.random(3)) * rng.uniform(0.3, 1.2)
        angle = rng.uniform(0, 2 * np.pi)
        along = ((xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)) / max(radius, 1.0)
        shade = 1 + rng.uniform(0, 0.4) * along
        if rng.random() < 0.2:
            shade = shade + rng.uniform(0.05, 0.3) * np.sin(along * radius * rng.uniform(0.5, 2.5))
        image[y0:y1, x0:x1][inside] = np.clip(color[None, :] * shade[inside][:, None], 0, 1)
    return finish(rng, image)


def finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Sometimes blur (out-of-focus photos) and sometimes add grain; returns float RGB in [0, 1]."""
    if rng.random() < 0.4:
        pil = Image.fromarray(np.round(image * 255).astype(np.uint8))
        image = np.asarray(pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5))), dtype=np.float64) / 255
    if rng.random() < 0.3:
        image = image + rng.normal(0, rng.uniform(0.005, 0.03), image.shape)
    return np.clip(image, 0, 1)


def leaves_batch(rng: np.random.Generator, n: int, size: int = SIZE) -> np.ndarray:
    """`n` dead-leaves images, float RGB [n, size, size, 3] in [0, 1]."""
    return np.stack([dead_leaves(rng, size) for _ in range(n)])
