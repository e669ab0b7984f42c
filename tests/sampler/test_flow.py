"""Flow matching (SD3, Flux): the flow Euler step matches diffusers, and inverts exactly where naive inversion drifts."""

from __future__ import annotations

import pytest
import torch

import diffinv
from diffinv.models.denoiser import pack, unpack
from diffinv.models.testing import tiny_flux_pipeline, tiny_sd3_pipeline

PROMPTS = ["a red circle on a blue background", "a green square"]


@pytest.fixture(scope="module")
def sd3():
    return tiny_sd3_pipeline()


@pytest.fixture(scope="module")
def sd3_dynamic():
    return tiny_sd3_pipeline(seed=1, dynamic_shifting=True)


@pytest.mark.parametrize("guidance", [1.0, 7.0])
@pytest.mark.parametrize("model", ["sd3", "sd3_dynamic"])
def test_flow_euler_parity_with_diffusers(model, guidance, request):
    pipe = request.getfixturevalue(model)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    expected = pipe(PROMPTS, latents=noise.clone(), num_inference_steps=8, guidance_scale=guidance, output_type="latent").images
    got = diffinv.generate(pipe, PROMPTS, noise=noise, steps=8, guidance=guidance)
    assert got.sampler == "flow-euler"  # the default on flow-matching models
    assert (got.latent - expected).abs().max() <= 1e-4
    image = pipe(PROMPTS, latents=noise.clone(), num_inference_steps=8, guidance_scale=guidance, output_type="pt").images
    assert (got.image - (image * 2 - 1)).abs().max() <= 1e-4  # decoding with the VAE's shift factor


def assert_tree_ring_survives_inversion(pipe, shape):
    """A Tree-Ring key embedded in the noise comes back through exact inversion of the latent (the random VAE
    of a test model cannot be inverted, so detection from the image only has to run), and three keys are
    told apart; the clean latent scores far from the key."""
    from diffinv.applications.watermark import classify, detect, distance, generate_watermarked, make_key

    keys = [make_key(shape, channel=-1, kind="ring", seed=seed) for seed in range(3)]
    options = dict(steps=8, guidance=1.0)
    exact = dict(method="exact", method_options={"anderson": 3, "tol": 1e-6})
    found = []
    for index, key in enumerate(keys):
        marked = generate_watermarked(pipe, PROMPTS[0], key, seed=10 + index, **options)
        found.append(diffinv.invert(pipe, latent=marked.latent, prompt=PROMPTS[0], **options, **exact).noise)
    clean = diffinv.generate(pipe, PROMPTS[0], seed=20, **options)
    recovered_clean = diffinv.invert(pipe, latent=clean.latent, prompt=PROMPTS[0], **options, **exact).noise
    assert classify(torch.cat(found), keys).tolist() == [0, 1, 2]
    assert float(distance(found[0], keys[0])) * 10 < float(distance(recovered_clean, keys[0]))
    assert torch.isfinite(detect(pipe, clean.image, keys[0], **options).distance).all()


@pytest.mark.parametrize("guidance", [1.0, 7.0])
def test_flow_exact_inversion_beats_naive(sd3, guidance):
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    made = diffinv.generate(sd3, PROMPTS[0], noise=noise, steps=10, guidance=guidance)
    common = dict(latent=made.latent, prompt=PROMPTS[0], steps=10, guidance=guidance)
    naive = diffinv.invert(sd3, **common)
    exact = diffinv.invert(sd3, **common, method="exact", method_options={"anderson": 3, "tol": 1e-6, "max_iter": 300})
    loose = diffinv.invert(sd3, **common, method="exact", method_options={"tol": 1e-1, "max_iter": 1})
    fixed = diffinv.invert(sd3, **common, method="fixed-point", method_options={"tol": 1e-6, "max_iter": 300})
    ratio = 100 if guidance == 1.0 else 10
    assert exact.converged and exact.sampler == "flow-euler"
    assert diffinv.nmse(exact.noise, noise) * ratio < diffinv.nmse(naive.noise, noise)
    assert diffinv.nmse(loose.noise, noise) * ratio > diffinv.nmse(naive.noise, noise)  # the bound needs a solved step
    assert diffinv.nmse(fixed.noise, noise) < diffinv.nmse(naive.noise, noise)


def test_samplers_refuse_the_other_family(sd3, pipe):
    with pytest.raises(ValueError, match="does not fit a flow-matching model; choose one of flow-euler"):
        diffinv.generate(sd3, "x", seed=0, sampler="ddim", steps=4)
    with pytest.raises(ValueError, match="does not fit a diffusion"):
        diffinv.invert(pipe, latent=torch.zeros(1, 4, 8, 8), sampler="flow-euler", steps=4)
    with pytest.raises(ValueError, match="unknown sampler"):
        diffinv.generate(sd3, "x", seed=0, sampler="flow", steps=4)


def test_flow_decoders_and_tree_ring(sd3, tmp_path):
    from diffinv.models.loading import load

    made = diffinv.generate(sd3, PROMPTS[0], seed=1, steps=4, guidance=3.0)
    for decoder in ("encoder", "gradient-free", "gradient"):
        out = diffinv.invert(sd3, made.image, prompt=PROMPTS[0], steps=4, guidance=3.0, decoder=decoder,
                             decoder_options={} if decoder == "encoder" else {"iterations": 3})
        assert torch.isfinite(out.noise).all()
    assert_tree_ring_survives_inversion(sd3, (4, 8, 8))
    with pytest.raises(ValueError, match="editing needs a UNet pipeline"):  # SD3's attention is joint
        diffinv.edit(sd3, made.image, PROMPTS[0], PROMPTS[1], method="naive", steps=4)
    sd3.save_pretrained(tmp_path / "sd3")
    assert type(load(tmp_path / "sd3")).__name__ == "StableDiffusion3Pipeline"


@pytest.fixture(scope="module")
def flux():
    return tiny_flux_pipeline()


@pytest.mark.parametrize("guidance", [1.0, 7.0])
@pytest.mark.parametrize("embedded", [True, False], ids=["dev-style", "schnell-style"])
def test_flux_parity_with_diffusers(flux, guidance, embedded):
    pipe = flux if embedded else tiny_flux_pipeline(seed=2, guidance_embeds=False)
    noise = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    settings = dict(height=32, width=32, num_inference_steps=6, guidance_scale=guidance)
    expected = unpack(pipe(PROMPTS, latents=pack(noise), output_type="latent", **settings).images, 16, 16)
    got = diffinv.generate(pipe, PROMPTS, noise=noise, steps=6, guidance=guidance)
    assert got.sampler == "flow-euler" and got.nfe == 6  # guidance is a network input: one call per step
    assert (got.latent - expected).abs().max() <= 1e-4
    image = pipe(PROMPTS, latents=pack(noise), output_type="pt", **settings).images
    assert (got.image - (image * 2 - 1)).abs().max() <= 1e-4


@pytest.mark.parametrize("guidance", [1.0, 7.0])
def test_flux_exact_inversion_beats_naive(flux, guidance):
    noise = diffinv.seeded_noise(flux, 5)
    assert noise.shape == (1, 4, 16, 16)
    made = diffinv.generate(flux, PROMPTS[0], noise=noise, steps=8, guidance=guidance)
    common = dict(latent=made.latent, prompt=PROMPTS[0], steps=8, guidance=guidance)
    naive = diffinv.invert(flux, **common)
    exact = diffinv.invert(flux, **common, method="exact", method_options={"anderson": 3, "tol": 1e-6, "max_iter": 300})
    ratio = 100 if guidance == 1.0 else 10
    assert exact.converged and diffinv.nmse(exact.noise, noise) * ratio < diffinv.nmse(naive.noise, noise)


def test_flux_tree_ring_and_refusals(flux, tmp_path):
    from diffinv.models.loading import load

    assert_tree_ring_survives_inversion(flux, (4, 16, 16))
    with pytest.raises(ValueError, match="negative prompts"):
        diffinv.generate(flux, PROMPTS[0], seed=0, steps=2, negative_prompt="blurry")
    with pytest.raises(ValueError, match="not a multiple of 4"):
        diffinv.seeded_noise(flux, 0, height=34, width=34)
    flux.save_pretrained(tmp_path / "flux")
    assert type(load(tmp_path / "flux")).__name__ == "FluxPipeline"


def test_cli_on_a_saved_sd3_folder(sd3, tmp_path):
    """The commands a user runs: generate and invert a saved SD3 folder with the model's default sampler,
    and a one-line refusal of a diffusion sampler."""
    import json

    from typer.testing import CliRunner

    from diffinv.cli import app

    sd3.save_pretrained(tmp_path / "sd3")
    runner = CliRunner()
    common = ["--model", str(tmp_path / "sd3"), "--prompt", PROMPTS[0], "--steps", "6", "--guidance", "1"]
    made = runner.invoke(app, ["generate", *common, "--seed", "3", "--out", str(tmp_path / "gen")])
    assert made.exit_code == 0, made.output
    result = runner.invoke(app, ["invert", "--latent", str(tmp_path / "gen" / "latent.safetensors"), *common,
                                 "--method", "exact", "--method-option", "anderson=3", "--method-option", "tol=1e-6",
                                 "--reference", str(tmp_path / "gen"), "--out", str(tmp_path / "inv")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "inv" / "report.json").read_text())
    assert report["sampler"] == "flow-euler" and report["noise_nmse"] < 1e-6
    refused = runner.invoke(app, ["generate", *common, "--sampler", "ddim", "--out", str(tmp_path / "bad")])
    assert refused.exit_code == 2 and "does not fit a flow-matching model" in refused.output
    assert not (tmp_path / "bad").exists()
