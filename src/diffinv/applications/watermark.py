"""Tree-Ring watermarks (Wen et al. 2023): a key written into the Fourier transform of the initial noise.

The key is a pattern on a centred disc of one latent channel's (shifted) 2-D FFT. Embedding replaces
those Fourier coefficients of the noise with the key's; detection inverts an image back to its noise
(any diffinv inversion pipeline) and measures how close the same coefficients are to the key:

- `correlation` (the default): Re<y, k> / (|y| |k|), the matched filter for a known key (large =
  watermarked). It
  ignores how much energy the recovered coefficients carry, which varies from image to image (the
  disc holds the lowest frequencies, where the image's content sits) and which `distance` counts as
  distance from the key; so after an imperfect inversion it separates watermarked from clean images
  better (measurements: README, "Tree-Ring watermarks");
- `distance`: mean |y - k| over the disc (the Tree-Ring paper's score; small = watermarked);
- `p_value`: the paper's statistical test. Under "no watermark" the real and imaginary parts of the
  recovered coefficients are N(0, s^2) with s^2 estimated from them, so sum((y - k)^2) / s^2 follows a
  non-central chi-squared law with 2|M| degrees of freedom and non-centrality sum(k^2) / s^2; a small
  p-value rejects "no watermark".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from scipy.stats import ncx2

from diffinv.utils.outputs import save_tensors

if TYPE_CHECKING:
    from diffinv.inversion import InversionResult
    from diffinv.pipeline import Generation

PATTERNS = ("ring", "rand", "zeros")

#: Detection scores: "correlation" (the matched filter, the default: it detects best) and "distance" (the paper's).
SCORES = ("distance", "correlation")
DEFAULT_SCORE = "correlation"


@dataclass
class WatermarkKey:
    """A Tree-Ring key: complex pattern [C, h, w] (used where `mask` is true) and how it was made."""

    pattern: torch.Tensor
    mask: torch.Tensor
    channel: int
    radius: int
    kind: str
    seed: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.pattern.shape)

    def save(self, path: str | Path) -> None:
        """Write the key as safetensors (real and imaginary parts, mask) with its settings as metadata."""
        settings = {"channel": self.channel, "radius": self.radius, "kind": self.kind, "seed": self.seed}
        save_tensors(
            path,
            {"real": self.pattern.real.contiguous(), "imag": self.pattern.imag.contiguous(), "mask": self.mask.to(torch.uint8)},
            metadata={"diffinv": "tree-ring key", "settings": json.dumps(settings)},
        )

    @classmethod
    def load(cls, path: str | Path) -> "WatermarkKey":
        """Read a key written by `save`, refusing in one line a file that is not one or is damaged (missing
        tensors, mismatched shapes or dtypes, non-finite values, unreadable settings)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such key file")
        try:
            with safe_open(str(path), "pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError):
            raise ValueError(f"{path} is not a safetensors file (or it is damaged)") from None
        if metadata.get("diffinv") != "tree-ring key":
            raise ValueError(f"{path} is not a diffinv Tree-Ring key")
        missing = [name for name in ("real", "imag", "mask") if name not in tensors]
        if missing:
            raise ValueError(f"{path}: damaged Tree-Ring key, no {', '.join(missing)} tensor")
        real, imag, mask = tensors["real"], tensors["imag"], tensors["mask"]
        if real.ndim != 3 or real.shape != imag.shape or real.shape != mask.shape:
            raise ValueError(f"{path}: damaged Tree-Ring key, tensor shapes {list(real.shape)}, {list(imag.shape)}, "
                             f"{list(mask.shape)} should be one [C, h, w]")
        if real.dtype != torch.float32 or imag.dtype != torch.float32 or mask.dtype not in (torch.uint8, torch.bool):
            raise ValueError(f"{path}: damaged Tree-Ring key, dtypes {real.dtype}, {imag.dtype}, {mask.dtype} "
                             f"should be float32, float32 and uint8")
        if not (torch.isfinite(real).all() and torch.isfinite(imag).all()):
            raise ValueError(f"{path}: damaged Tree-Ring key, its pattern holds non-finite values")
        if not mask.bool().any():
            raise ValueError(f"{path}: damaged Tree-Ring key, its mask is empty")
        try:
            settings = json.loads(metadata["settings"])
            settings = {"channel": int(settings["channel"]), "radius": int(settings["radius"]),
                        "kind": str(settings["kind"]), "seed": int(settings["seed"])}
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            raise ValueError(f"{path}: damaged Tree-Ring key, unreadable settings") from None
        return cls(torch.complex(real, imag), mask.bool(), **settings)

    def check_fits(self, latent_shape: tuple[int, ...], source: str = "the key") -> None:
        """Refuse, before any work, a key made for latents of another shape than [C, h, w] `latent_shape`."""
        if tuple(latent_shape) != self.shape:
            raise ValueError(f"{source} is for latents {list(self.shape)}, the model's are {list(latent_shape)}")


def disc_mask(height: int, width: int, radius: int) -> torch.Tensor:
    """Boolean [h, w] mask of the centred disc of `radius` (centre at (h//2, w//2), as after fftshift)."""
    rows = torch.arange(height).view(-1, 1) - height // 2
    cols = torch.arange(width).view(1, -1) - width // 2
    return rows**2 + cols**2 <= radius**2


def default_radius(height: int) -> int:
    """The default key radius: a quarter of the latent's side (4 on 16x16, 16 on 64x64; at least 2), the
    radius that detects best on the bundled model (README, "Tree-Ring watermarks")."""
    return max(2, int(height / 4 + 0.5))


def paper_radius(height: int) -> int:
    """The Tree-Ring paper's radius, 10 on 64x64 latents, scaled to the latent size (at least 2)."""
    return max(2, int(height * 10 / 64 + 0.5))


def make_key(
    shape: tuple[int, int, int],
    channel: int = -1,
    radius: int | None = None,
    kind: str = "ring",
    seed: int = 0,
) -> WatermarkKey:
    """A key for latents of `shape` [C, h, w]: `kind` "ring" (constant on rings), "rand" or "zeros"."""
    if kind not in PATTERNS:
        raise ValueError(f"unknown watermark pattern {kind!r}; choose one of {', '.join(PATTERNS)}")
    channels, height, width = shape
    if not -channels <= channel < channels:
        raise ValueError(f"channel {channel} out of range for {channels} latent channels")
    channel %= channels
    radius = default_radius(height) if radius is None else radius
    if not 1 <= radius <= min(height, width) // 2:
        raise ValueError(f"radius {radius} must be between 1 and {min(height, width) // 2} for {height}x{width} latents")
    generator = torch.Generator().manual_seed(seed)
    pattern = torch.zeros(shape, dtype=torch.complex64)
    if kind == "rand":
        noise = torch.randn(shape, generator=generator)
        pattern = torch.fft.fftshift(torch.fft.fft2(noise), dim=(-2, -1)).to(torch.complex64)
    elif kind == "ring":
        # Real values, constant on each ring: the pattern is then the spectrum of a real image, so a
        # perfect inversion recovers it exactly (the reference code's complex values lose their
        # imaginary part when the noise is made real again). Scale: that of a unit Gaussian's FFT.
        values = torch.randn(radius + 1, generator=generator) * (height * width) ** 0.5
        for ring in range(radius, -1, -1):  # outer rings first, inner discs overwrite
            pattern[:, disc_mask(height, width, ring)] = complex(values[ring])
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[channel] = disc_mask(height, width, radius)
    return WatermarkKey(pattern=pattern, mask=mask, channel=channel, radius=radius, kind=kind, seed=seed)


def _spectrum(noise: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.fft2(noise.double()), dim=(-2, -1))


def embed(noise: torch.Tensor, key: WatermarkKey) -> torch.Tensor:
    """Noise [B, C, h, w] with the key written into its Fourier coefficients under the mask."""
    if tuple(noise.shape[1:]) != key.shape:
        raise ValueError(f"key is for latents {list(key.shape)}, noise is {list(noise.shape[1:])}")
    spectrum = _spectrum(noise)
    spectrum[:, key.mask] = key.pattern[key.mask].to(spectrum.dtype)
    watermarked = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real
    return watermarked.to(noise.dtype)


def _masked(noise: torch.Tensor, key: WatermarkKey) -> torch.Tensor:
    if tuple(noise.shape[1:]) != key.shape:
        raise ValueError(f"key is for latents {list(key.shape)}, recovered noise is {list(noise.shape[1:])}")
    return _spectrum(noise)[:, key.mask]


def distance(noise: torch.Tensor, key: WatermarkKey) -> torch.Tensor:
    """Per-image mean |FFT(noise) - key| over the key's disc (Tree-Ring's score; lower = watermarked)."""
    return (_masked(noise, key) - key.pattern[key.mask].to(torch.complex128)).abs().mean(dim=1).float()


def correlation(noise: torch.Tensor, key: WatermarkKey) -> torch.Tensor:
    """Per-image normalised correlation Re<y, k> / (|y| |k|) of the recovered disc coefficients y with the
    key's k (the matched filter; in [-1, 1], higher = watermarked, about 0 for clean noise)."""
    recovered = _masked(noise, key)
    reference = key.pattern[key.mask].to(torch.complex128)
    inner = (recovered.conj() * reference).real.sum(dim=1)
    norms = recovered.abs().pow(2).sum(dim=1).sqrt() * reference.abs().pow(2).sum().sqrt()
    return (inner / norms.clamp_min(1e-12)).float()


def check_score(score: str) -> str:
    """`score` if it names a detection score, else ValueError listing them."""
    if score not in SCORES:
        raise ValueError(f"unknown watermark score {score!r}; choose one of {', '.join(SCORES)}")
    return score


def watermark_score(noise: torch.Tensor, key: WatermarkKey, score: str = DEFAULT_SCORE) -> torch.Tensor:
    """Per-image detection score, higher = watermarked: minus `distance`, or `correlation`."""
    if check_score(score) == "correlation":
        return correlation(noise, key)
    return -distance(noise, key)


def p_value(noise: torch.Tensor, key: WatermarkKey) -> torch.Tensor:
    """Per-image p-value of "no watermark" (small = watermarked), by the non-central chi-squared test."""
    recovered = torch.view_as_real(_masked(noise, key)).flatten(1)
    reference = torch.view_as_real(key.pattern[key.mask].to(torch.complex128)).flatten()
    variance = recovered.pow(2).mean(dim=1).clamp_min(1e-12)
    statistic = (recovered - reference).pow(2).sum(dim=1) / variance
    noncentrality = reference.pow(2).sum() / variance
    values = [ncx2.cdf(float(s), df=recovered.shape[1], nc=float(n)) for s, n in zip(statistic, noncentrality)]
    return torch.tensor(values, dtype=torch.float64)


def classify(noise: torch.Tensor, keys: list[WatermarkKey], score: str = DEFAULT_SCORE) -> torch.Tensor:
    """Index of the best-scoring key (nearest by `distance`, or most correlated) for each recovered noise:
    multi-key attribution."""
    return torch.stack([watermark_score(noise, key, score) for key in keys], dim=1).argmax(dim=1)


@dataclass
class Detection:
    """Per-image Tree-Ring scores of recovered noise, and the inversion that recovered it."""

    distance: torch.Tensor
    p_value: torch.Tensor
    correlation: torch.Tensor
    inversion: "InversionResult"

    def check_finite(self) -> None:
        """Refuse to give a verdict from a non-finite score (a NaN distance would read "not watermarked")."""
        scores = torch.stack([self.distance.double(), self.correlation.double(), self.p_value.double()])
        if not torch.isfinite(scores).all():
            raise FloatingPointError("the recovered noise gives non-finite watermark scores; no verdict is made "
                                     "(check the inversion's report for non-finite values)")

    def report(self, threshold: float = 0.01) -> list[dict[str, float | bool]]:
        """Per image: distance, correlation, p-value, and whether the p-value is below `threshold`."""
        return [
            {"distance": float(d), "correlation": float(c), "p_value": float(p), "watermarked": bool(p < threshold)}
            for d, c, p in zip(self.distance, self.correlation, self.p_value)
        ]


def generate_watermarked(pipe, prompt, key: WatermarkKey, seed: int = 0, **generate_options) -> "Generation":
    """Generate images whose initial noise (that of `seed`) carries `key`."""
    from diffinv.pipeline import generate, seeded_noise

    batch = 1 if isinstance(prompt, str) else len(prompt)
    noise = seeded_noise(pipe, seed, batch, generate_options.pop("height", None), generate_options.pop("width", None))
    return generate(pipe, prompt, noise=embed(noise, key), seed=seed, **generate_options)


def detect(pipe, image, key: WatermarkKey, prompt="", sampler: str | None = None, steps: int = 50, guidance: float = 1.0,
           method: str = "naive", decoder: str = "encoder", **invert_options) -> Detection:
    """Invert `image` (tensor in [-1, 1] or PIL images) to its noise and score it against `key`.

    Defaults follow Tree-Ring's detection: empty prompt, guidance 1, DDIM 50 steps.
    """
    from diffinv.pipeline import invert

    result = invert(pipe, image, prompt=prompt, sampler=sampler, steps=steps, guidance=guidance,
                    method=method, decoder=decoder, **invert_options)
    noise = result.noise.cpu()
    found = Detection(distance=distance(noise, key), p_value=p_value(noise, key), correlation=correlation(noise, key),
                      inversion=result)
    found.check_finite()
    return found


def is_clean_label(label) -> bool:
    """Manifest labels that mean "no watermark": none, "clean", -1, false."""
    return label is None or label is False or str(label).strip().lower() in ("clean", "-1", "none", "")


def key_label(label) -> int:
    """The key index a watermarked image's label names: 0, 1, ... or "key0", "key1", ... (true means key 0)."""
    if label is True:
        return 0
    text = str(label).strip().lower().removeprefix("key")
    if not text.isdigit():
        raise ValueError(f"label {label!r} names no key: use clean (or -1) for clean images and 0, 1, ... for keys")
    return int(text)


def score_dataset(records: list[dict], out, keys: list[WatermarkKey], threshold: float = 0.01,
                  score: str = DEFAULT_SCORE) -> tuple[list[dict], dict]:
    """Tree-Ring scores of every inverted image of a dataset run (its saved noise), and, with labels, the
    paper's numbers: AUC and TPR at 1% FPR of the first key's images against the clean ones (by `score`
    against the first key: "distance", Tree-Ring's, or "correlation"), and with several keys the attribution
    accuracy (best-scoring key = label)."""
    from pathlib import Path

    from safetensors.torch import load_file

    from diffinv.utils.metrics import auc, tpr_at_fpr

    check_score(score)
    rows, first_key_scores = [], []  # first_key_scores: higher = watermarked, one per row
    for record in records:
        if record.get("status") != "ok":
            continue
        noise = load_file(str(Path(out) / record["outputs"] / "noise.safetensors"))["noise"]
        if not torch.isfinite(noise).all():
            rows.append({"path": record["path"], "label": record.get("label"), "error": "non-finite recovered noise"})
            continue
        distances = [float(distance(noise, key)[0]) for key in keys]
        correlations = [float(correlation(noise, key)[0]) for key in keys]
        ranked = [float(watermark_score(noise, key, score)[0]) for key in keys]  # higher = watermarked
        first_key_scores.append(ranked[0])
        rows.append({"path": record["path"], "label": record.get("label"), "distance": distances[0],
                     "correlation": correlations[0], "p_value": float(p_value(noise, keys[0])[0]),
                     "nearest_key": max(range(len(keys)), key=ranked.__getitem__), "distances": distances,
                     "correlations": correlations})
    failed = [row for row in rows if "error" in row]
    rows = [row for row in rows if "error" not in row]
    for row in rows:
        row["watermarked"] = row["p_value"] < threshold
    metrics: dict = {"images": len(rows), "flagged": sum(row["watermarked"] for row in rows), "score": score}
    if failed:
        metrics["unscored"] = len(failed)
    labelled = [row for row in rows if "label" in row and row["label"] is not None]
    if labelled:
        clean = [value for row, value in zip(rows, first_key_scores) if is_clean_label(row["label"])]
        marked = [row for row in rows if not is_clean_label(row["label"])]
        first = [value for row, value in zip(rows, first_key_scores)
                 if not is_clean_label(row["label"]) and key_label(row["label"]) == 0]
        if clean and first:
            metrics["auc"] = auc(first, clean)
            metrics["tpr_at_1fpr"] = tpr_at_fpr([-v for v in first], [-v for v in clean], 0.01)
        if len(keys) > 1 and marked:
            metrics["attribution_accuracy"] = sum(row["nearest_key"] == key_label(row["label"]) for row in marked) / len(marked)
        metrics["clean"], metrics["watermarked_images"] = len(clean), len(marked)
    return rows + failed, metrics
