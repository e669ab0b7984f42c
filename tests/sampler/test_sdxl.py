"""SDXL: the denoiser folds in pooled embeddings and time ids; sampling matches diffusers; inversion works."""

from __future__ import annotations

import pytest
import torch

import diffinv
from diffinv.models.testing import tiny_sdxl_pipeline
from diffinv.sampler.schedule import diffusers_scheduler

PROMPTS = ["a red circle on a blue background", "a green square"]


@pytest.fixture(scope="module")
def xl():
    return tiny_sdxl_pipeline()


@pytest.mark.parametrize("guidance", [1.0, 7.0])
@pytest.mark.parametrize("name", ["ddim", "euler", "dpm++2m"])
def test_sdxl_parity_with_diffusers(xl, name, guidance):
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    original = xl.scheduler
    xl.scheduler = diffusers_scheduler(name, original.config)
    try:
        expected = xl(PROMPTS, latents=noise.clone(), num_inference_steps=8, guidance_scale=guidance, output_type="latent").images
    finally:
        xl.scheduler = original
    got = diffinv.generate(xl, PROMPTS, noise=noise, sampler=name, steps=8, guidance=guidance).latent
    assert (got - expected).abs().max() <= 1e-4


@pytest.mark.parametrize("guidance", [1.0, 7.0])
def test_sdxl_exact_inversion_beats_naive(xl, guidance):
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    made = diffinv.generate(xl, PROMPTS[0], noise=noise, sampler="euler", steps=10, guidance=guidance)
    naive = diffinv.invert(xl, latent=made.latent, prompt=PROMPTS[0], sampler="euler", steps=10, guidance=guidance)
    exact = diffinv.invert(xl, latent=made.latent, prompt=PROMPTS[0], sampler="euler", steps=10, guidance=guidance,
                           method="exact", method_options={"anderson": 3, "tol": 1e-6, "max_iter": 300})
    ratio = 100 if guidance == 1.0 else 10
    assert diffinv.nmse(exact.noise, noise) * ratio < diffinv.nmse(naive.noise, noise)


def test_sdxl_decoder_and_editing_run(xl):
    made = diffinv.generate(xl, PROMPTS[0], seed=1, sampler="euler", steps=4, guidance=3.0)
    for decoder in ("encoder", "gradient-free", "gradient"):
        out = diffinv.invert(xl, made.image, prompt=PROMPTS[0], sampler="euler", steps=4, guidance=3.0, decoder=decoder,
                             decoder_options={} if decoder == "encoder" else {"iterations": 3})
        assert torch.isfinite(out.noise).all()
    edited = diffinv.edit(xl, made.image, PROMPTS[0], "a green circle on a blue background", method="naive",
                          sampler="euler", steps=4, guidance=3.0)
    assert edited.injected_maps > 0 and torch.isfinite(edited.edited).all()


def test_load_recognises_sdxl_folders_and_refuses_others(xl, tmp_path):
    import json

    from diffinv.models.loading import ModelNotFoundError, load

    xl.save_pretrained(tmp_path / "xl")
    loaded = load(tmp_path / "xl")
    assert type(loaded).__name__ == "StableDiffusionXLPipeline"
    index = json.loads((tmp_path / "xl" / "model_index.json").read_text())
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyPipeline"}))
    with pytest.raises(ModelNotFoundError, match="holds a KandinskyPipeline pipeline; diffinv supports"):
        load(tmp_path / "other")


def test_easyinv_takes_the_sdxl_preset_on_sdxl(xl, pipe):
    from diffinv.inversion.easyinv import PRESETS
    from diffinv.inversion.methods import EasyInv
    from diffinv.models.denoiser import Denoiser, model_family
    from diffinv.models.testing import tiny_flux_pipeline, tiny_sd3_pipeline
    from diffinv.sampler.schedule import make_schedule

    sd3, flux = tiny_sd3_pipeline(), tiny_flux_pipeline()
    assert [model_family(model) for model in (pipe, xl, sd3, flux)] == ["sd", "sdxl", "sd3", "flux"]
    # the preset follows the model family: SD3 and Flux have pooled embeddings too, but they are not SDXL
    for model, preset in ((xl, "sdxl"), (pipe, "sd"), (sd3, "sd"), (flux, "sd")):
        solver = EasyInv().build()
        denoiser = Denoiser.from_pipeline(model, "a red circle", 1, 1.0, model.scheduler.config.get("prediction_type", "flow"))
        assert denoiser.family == model_family(model)
        solver.prepare(denoiser, make_schedule("ddim", xl.scheduler.config, 10), torch.zeros(1, 4, 8, 8))
        assert (solver.eta, solver.window) == PRESETS[preset]
    pinned = EasyInv(preset="sd").build()
    pinned.prepare(Denoiser.from_pipeline(xl, "x", 1, 1.0, "epsilon"), make_schedule("ddim", xl.scheduler.config, 10),
                   torch.zeros(1, 4, 8, 8))
    assert (pinned.eta, pinned.window) == PRESETS["sd"]
