"""Benchmark of editing by inversion: how much of the background each inversion method keeps, and whether
the edit happened, for prompt-to-prompt and DiffEdit.

Generated scenes: for each sampler and guidance, `n` images of "a {color} {shape} on a {background}
background" are sampled from seeded noise with that sampler and guidance, then edited with the same
settings, once per (inversion method, mode): a colour edit (the shape's colour changes) and a shape
edit (the shape's kind changes). The edit region is what the scene checker reads as the shape in the
input or in the edited image, grown by `grow` pixels; the background is the rest, scored by PSNR and
SSIM against the input. An edit succeeds when the checker reads the target colour (or shape) and the
source background in the edited image. Photos: scikit-image's photos with a given mask (a centred
disc), "a photo" -> "a photo with a red circle", background PSNR/SSIM outside the mask (the edit
itself cannot be read there). Inversion runs once per (image batch, method) and serves both modes.
With `saved` the scenes are edited as `diffinv generate` saves them (clipped and rounded to 8 bits,
`diffinv.bench.decoder.saved_image`), so the decoder inversion (`decoder`, options after a colon:
``gradient:clipped=false``) starts from what a PNG holds; the photos are 8-bit files already.
The method `true-noise` edits generated scenes from the noise they were sampled from (a perfect
inversion, no decoder inversion): the ceiling each mode reaches, which tells an inversion's shortfall
from the mode's own; photos have no true noise and skip it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.ndimage import binary_dilation
from tqdm.auto import tqdm

from diffinv.applications.editing import EDIT_MODES, MODES, edit_scores
from diffinv.applications.editing import edit as run_edit
from diffinv.bench.decoder import saved_image
from diffinv.bench.images import skimage_images
from diffinv.bench.methods import resolve_method
from diffinv.bench.tables import Column, format_table
from diffinv.decoder import DECODERS
from diffinv.inversion import METHODS, InversionResult
from diffinv.pipeline import default_image_side, generate, seeded_noise
from diffinv.bench.scenes import COLORS, SHAPES, caption, read_scene, shape_region
from diffinv.utils.images import tensor_to_pil
from diffinv.utils.metrics import nmse, to_db

TRUE_NOISE = "true-noise"
DEFAULT_METHODS = (TRUE_NOISE, "naive", "exact-aa", "easyinv", "renoise", "fixed-point")
DEFAULT_SAMPLERS = (("ddim", 50), ("dpm++2m", 10))
DEFAULT_GUIDANCES = (3.0, 7.5)
EDITS = ("colour", "shape")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
PHOTO_PROMPTS = ("a photo", "a photo with a red circle")

COLUMNS: list[Column] = [
    ("images", "images", ""),
    ("edit", "edit", ""),
    ("sampler", "sampler", ""),
    ("steps", "steps", ""),
    ("guidance", "w", "g"),
    ("method", "method", ""),
    ("mode", "mode", ""),
    ("background_psnr", "bg PSNR", ".2f"),
    ("background_ssim", "bg SSIM", ".3f"),
    ("success", "edit ok", ".2f"),
    ("reconstruction_psnr", "rec PSNR", ".2f"),
    ("nfe", "NFE", ".0f"),
    ("seconds", "seconds", ".2f"),
]


def scene_edits(n: int, kind: str, seed: int = 0) -> list[tuple[str, str, tuple[str, str, str]]]:
    """`n` (source prompt, target prompt, target combo) pairs of a colour or shape edit, cycling through
    colours and shapes deterministically."""
    rng = np.random.default_rng([seed, EDITS.index(kind)])
    pairs = []
    for _ in range(n):
        colour, background = rng.choice([c for c in COLORS], 2, replace=False)
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        if kind == "colour":
            target = (str(rng.choice([c for c in COLORS if c not in (colour, background)])), shape, str(background))
        else:
            target = (str(colour), str(rng.choice([s for s in SHAPES if s != shape])), str(background))
        pairs.append((caption(str(colour), shape, str(background)), caption(*target), target))
    return pairs


def background_of(inputs: torch.Tensor, edited: torch.Tensor, grow: int) -> torch.Tensor:
    """1 outside the edit region: the checker's shape in the input or the edited image, grown by `grow` px."""
    keep = []
    for before, after in zip(tensor_to_pil(inputs), tensor_to_pil(edited)):
        region = shape_region(np.asarray(before)) | shape_region(np.asarray(after))
        if grow:
            region = binary_dilation(region, iterations=grow)
        keep.append(torch.from_numpy(~region))
    return torch.stack(keep)[:, None].float()


def _row(result, inputs: torch.Tensor, background: torch.Tensor, success: float | None, mode: str, **settings: Any) -> dict[str, Any]:
    scores = edit_scores(result, inputs, background=background)
    return {**settings, "mode": mode, "method": result.inversion.method, "decoder": result.inversion.decoder,
            "background_psnr": scores.get("background_psnr"), "background_ssim": scores.get("background_ssim"),
            "reconstruction_psnr": scores["reconstruction_psnr"], "success": success, "nfe": result.nfe,
            "seconds": result.seconds / len(inputs), "peak_memory_bytes": result.peak_memory_bytes,
            "converged": result.inversion.converged}


def _edit_all(pipe, inputs, sources, targets, label, tol, decoder, modes, mask, inversion=None, **settings):
    """(mode spec, result) for every mode for one method from one inversion (each result's NFE and seconds
    include it); a given `inversion` (the true noise) is used as it is."""
    method = METHODS.resolve("naive") if label == TRUE_NOISE else resolve_method(label, tol)
    for spec in modes:
        result = run_edit(pipe, inputs, sources, targets, method=method, decoder=decoder, mode=EDIT_MODES.resolve(spec),
                          mask=mask, inversion=inversion, **settings)
        inversion = result.inversion
        yield spec, result


def check_mode_spec(spec: str) -> str:
    """`spec` ("mode" or "mode:key=value,...") if its mode and options are valid, else a ValueError."""
    EDIT_MODES.resolve(spec)
    return spec


def run_editing_benchmark(
    pipe,
    n: int = 8,
    samplers: Sequence[tuple[str, int]] = DEFAULT_SAMPLERS,
    guidances: Sequence[float] = DEFAULT_GUIDANCES,
    methods: Sequence[str] = DEFAULT_METHODS,
    modes: Sequence[str] = MODES,
    edits: Sequence[str] = EDITS,
    photos: Sequence[str] = PHOTOS,
    decoder: str = "encoder",
    saved: bool = False,
    tol: float = 1e-4,
    grow: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One row per (images, edit, sampler, guidance, method, mode), averaged over the images. A mode is a
    spec with options after a colon (``prompt-to-prompt:local_blend=0.3``), shown as written; so is `decoder`
    (``gradient:clipped=false``). `saved`: edit the scenes as 8-bit files hold them (see the module's docstring).
    Scene rows also give the recovered noise's NMSE against the true noise and the latent's in dB."""
    decoder_config = DECODERS.resolve(decoder)  # a bad name or option is refused before any image is generated
    tags = dict(decoder_label=decoder, decoder_config=decoder_config.as_dict(), saved=saved)
    for spec in modes:
        check_mode_spec(spec)
    for label in methods:
        if label != TRUE_NOISE:
            resolve_method(label, tol)
    for kind in edits:
        if kind not in EDITS:
            raise ValueError(f"unknown edit {kind!r}; choose from {', '.join(EDITS)}")
    rows: list[dict[str, Any]] = []
    photo_methods = [label for label in methods if label != TRUE_NOISE]
    cells = len(samplers) * len(guidances) * (len(edits) * len(methods) + (len(photo_methods) if photos else 0))
    bar = tqdm(total=cells, desc="editing benchmark", disable=not progress)
    size = default_image_side(pipe)
    photo_batch = torch.stack([item.image for item in skimage_images(size, photos)]) if photos else None
    if photos:
        yy, xx = np.mgrid[:size, :size] + 0.5
        disc = torch.from_numpy((xx - size / 2) ** 2 + (yy - size / 2) ** 2 <= (size * 0.25) ** 2).float()[None, None]
    for sampler, steps in samplers:
        for guidance in guidances:
            settings = dict(sampler=sampler, steps=steps, guidance=float(guidance))
            for kind in edits:
                pairs = scene_edits(n, kind, seed)
                sources, targets = [p[0] for p in pairs], [p[1] for p in pairs]
                noise = torch.cat([seeded_noise(pipe, seed + i) for i in range(n)])
                made = generate(pipe, sources, noise=noise, **settings)
                inputs = saved_image(made.image).cpu() if saved else made.image.cpu()
                truth = InversionResult(noise=noise, latent=made.latent, method=TRUE_NOISE, **settings)
                for label in methods:
                    for mode, result in _edit_all(pipe, inputs, sources, targets, label, tol, decoder_config, modes, None,
                                                  inversion=truth if label == TRUE_NOISE else None, **settings):
                        readings = [read_scene(np.asarray(im)) for im in result.edited_images]
                        hits = [(r.color, r.background) == (t[0], t[2]) if kind == "colour" else
                                (r.shape, r.color, r.background) == (t[1], t[0], t[2]) for r, (_, _, t) in zip(readings, pairs)]
                        found = result.inversion
                        errors = {} if label == TRUE_NOISE else dict(
                            noise_nmse=nmse(found.noise, noise),
                            latent_nmse_db=to_db(nmse(found.latent, made.latent)))
                        rows.append(_row(result, inputs, background_of(inputs, result.edited, grow), float(np.mean(hits)),
                                         mode, images="scenes", edit=kind, label=label, **tags, **errors, **settings))
                    bar.update(1)
            if photos:
                count = len(photo_batch)
                for label in photo_methods:
                    for mode, result in _edit_all(pipe, photo_batch, [PHOTO_PROMPTS[0]] * count, [PHOTO_PROMPTS[1]] * count,
                                                  label, tol, decoder_config, modes, disc, **settings):
                        rows.append(_row(result, photo_batch, 1 - disc.expand(count, -1, -1, -1), None, mode,
                                         images="photos", edit="mask", label=label, **tags, **settings))
                    bar.update(1)
    bar.close()
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The benchmark as one text table; the title names the decoder inversion and saved scenes where they are not
    the defaults (the encoder, the float images)."""
    title = "Editing by inversion: background kept outside the edit region, edit success"
    first = rows[0] if rows else {}
    if first.get("decoder_label", "encoder") != "encoder" or first.get("saved"):
        title += f" (decoder {first['decoder_label']}" + (", scenes saved as 8-bit files)" if first.get("saved") else ")")
    return format_table([{**row, "method": row.get("label", row["method"])} for row in rows], COLUMNS, title=title)
