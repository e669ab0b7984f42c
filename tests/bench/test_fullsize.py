"""`diffinv bench full-size`: the published architectures, the fit rule, random weights, and every part run
end to end on a tiny stand-in architecture registered beside the real ones."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from diffinv.bench import fullsize
from diffinv.bench.architectures import SPECS, Spec, build_pipeline, fit_reason, parameter_counts, random_module
from diffinv.bench.fullsize import check_json_path, decoder_rows, format_rows, run_full_size_benchmark
from diffinv.cli import app

MINI = Spec(
    "mini", "mini UNet", "UNet2DConditionModel",
    dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
         cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8),
    dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
         sample_size=16, scaling_factor=0.18215),
    16, (32,),
)


@pytest.fixture
def mini(monkeypatch):
    monkeypatch.setitem(SPECS, "mini", MINI)
    return "mini"


@pytest.mark.parametrize("name, network_millions", [("sd2.1", 865.9), ("sdxl", 2567.5), ("sd3", 2028.3), ("flux", 11901.4)])
def test_published_architectures_have_their_published_sizes(name, network_millions):
    counts = parameter_counts(name)
    network = counts.get("unet", counts.get("transformer"))
    assert round(network / 1e6, 1) == network_millions
    assert round(counts["vae"] / 1e6) == 84  # the 83.7M-parameter KL autoencoder of all four


def test_a_model_that_cannot_fit_is_skipped_with_its_size():
    reason = fit_reason("flux", torch.bfloat16, torch.device("cpu"), limit=12 * 2**30)
    assert reason.startswith("does not fit: 12.03B parameters are 22.4 GiB in bfloat16, more than 80% of the 12.0 GiB allowed")
    assert "\n" not in reason
    assert fit_reason("sd2.1", torch.float32, torch.device("cpu"), limit=12 * 2**30) is None
    assert fit_reason("sdxl", torch.float32, torch.device("cpu"), limit=12 * 2**30) is not None  # 10.7 GB of weights
    assert fit_reason("sdxl", torch.bfloat16, torch.device("cpu"), limit=12 * 2**30) is None


def test_random_weights_are_made_in_the_dtype_and_seeded():
    from diffusers import SD3Transformer2DModel

    config = dict(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
                  num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=16,
                  pos_embed_max_size=8)
    first = random_module(lambda: SD3Transformer2DModel(**config), torch.bfloat16, torch.device("cpu"), seed=3)
    again = random_module(lambda: SD3Transformer2DModel(**config), torch.bfloat16, torch.device("cpu"), seed=3)
    other = random_module(lambda: SD3Transformer2DModel(**config), torch.bfloat16, torch.device("cpu"), seed=4)
    weights = dict(first.named_parameters())
    assert all(p.dtype == torch.bfloat16 and torch.isfinite(p).all() for p in weights.values())
    matrices = [p for p in weights.values() if p.ndim > 1]
    assert all(p.abs().sum() > 0 for p in matrices)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(first.parameters(), other.parameters()))
    # buffers computed at construction (the sin-cos position table) survive the empty-weights build
    reference = SD3Transformer2DModel(**config)
    assert torch.equal(first.pos_embed.pos_embed.float(), reference.pos_embed.pos_embed.to(torch.bfloat16).float())


def test_json_path_is_checked_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        check_json_path(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="cannot write"):
        check_json_path(blocker / "rows.json")
    check_json_path(tmp_path / "new" / "rows.json")
    assert (tmp_path / "new").is_dir() and not (tmp_path / "new" / "rows.json").exists()


def test_every_part_runs_on_a_small_architecture(mini, tmp_path):
    path = tmp_path / "rows.json"
    rows = run_full_size_benchmark(models=[mini], frames=(1, 2), iterations=1, dtypes=("float32", "bfloat16"), device="cpu",
                                   steps=2, repeats=1, full_steps=3, smoke_size=16, json_path=path, progress=False)
    assert json.loads(path.read_text())["rows"] == json.loads(json.dumps(rows))
    for dtype in ("float32", "bfloat16"):
        mine = [row for row in rows if row["dtype"] == dtype]
        assert {row["part"] for row in mine} == {"build", "call", "inversion", "decoder", "smoke"}
        assert all(row["status"] == "ok" for row in mine), [row for row in mine if row["status"] != "ok"]
        assert all(row["memory_source"] == "process VmHWM growth" and row["device"] == "cpu" for row in mine)
        smoke = {row["method"] for row in mine if row["part"] == "smoke"}
        assert smoke == {"sampler naive", "sampler easyinv", "sampler renoise", "sampler exact", "sampler fixed-point",
                         "decoder encoder", "decoder forward-step", "decoder inertial-km", "decoder gradient-free",
                         "decoder gradient"}
        decoder = [row for row in mine if row["part"] == "decoder"]
        assert {(row["frames"], row["chunk"]) for row in decoder} == {(1, 1), (2, 2), (2, 1)}
        assert all(row["peak_memory_bytes"] > 0 for row in decoder)
        inversion = {(row["steps"], row["method"]): row for row in mine if row["part"] == "inversion"}
        assert set(inversion) == {(2, "diffusers DDIMInverseScheduler loop"), (2, "diffinv naive"),
                                  (3, "diffusers DDIMInverseScheduler loop"), (3, "diffinv naive"), (3, "diffinv exact")}
        naive = inversion[(2, "diffinv naive")]
        assert naive["nfe"] == inversion[(2, "diffusers DDIMInverseScheduler loop")]["nfe"] == 2
        assert naive["ratio"] > 0 and naive["cpu_ratio"] > 0 and naive["cpu_seconds"] > 0
        for row in inversion.values():  # the time outside the network calls: positive, less than the whole
            assert 0 < row["outside_seconds"] < row["seconds"]
        # the same DDIM inversion: float32 agrees to rounding; in bfloat16 both ran the same half network
        assert naive["noise_nmse_to_diffusers"] < (1e-10 if dtype == "float32" else 1e-3)
    table = format_rows(rows)
    assert "mini" in table and "process VmHWM growth" in table and "cpu (" in table


def test_a_run_estimated_not_to_fit_is_a_row_that_says_so(mini):
    pipe = build_pipeline(mini, torch.float32, "cpu")
    seen = []
    rows = decoder_rows(pipe, [1, 2], 1, limit=1, methods=("gradient-free",), progress=False, on_row=seen.append)
    assert [row["status"] for row in rows] == ["ok", "did not fit", "did not fit"] and seen == rows
    assert rows[1]["note"].startswith("estimated") and "> limit" in rows[1]["note"]
    only_chunked = decoder_rows(pipe, [2], 1, limit=None, methods=("gradient", "encoder"), chunks=("1",), progress=False)
    assert [(row["method"], row["frames"], row["chunk"]) for row in only_chunked] == [("gradient", 2, 1), ("encoder", 2, 1)]


def test_a_forced_allocation_failure_becomes_a_row(mini, monkeypatch):
    def fail(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    monkeypatch.setattr(fullsize, "call_rows", fail)
    rows = run_full_size_benchmark(models=[mini], dtypes=("float32",), device="cpu", parts=("call",), progress=False)
    row = rows[-1]
    assert row["status"] == "out of memory" and row["part"] == "call"
    assert row["note"].startswith("out of memory while running the call part of mini UNet at 16px in float32; lower it with")


def test_a_flux_skip_from_the_command_line(tmp_path):
    path = tmp_path / "flux.json"
    result = CliRunner().invoke(app, ["bench", "full-size", "--models", "flux", "--dtype", "bfloat16", "--memory-limit", "12",
                                      "--device", "cpu", "--json", str(path)])
    assert result.exit_code == 0, result.output
    assert "does not fit: 12.03B parameters are 22.4 GiB in bfloat16" in result.output
    assert json.loads(path.read_text())["rows"][0]["status"] == "skipped"


@pytest.mark.parametrize("args, message", [
    (["--json", "{tmp}"], "is a folder"), (["--models", "sd2.1,sd4"], "unknown model(s) sd4"),
    (["--dtype", "float8"], "unknown dtype"), (["--device", "cuda:7"], "not available"), (["--parts", "all"], "unknown part(s)"),
    (["--chunks", "2"], "unknown chunk choice(s) 2"), (["--decoder-methods", "adam"], "unknown decoder method 'adam'"),
])
def test_bad_options_fail_in_one_line_before_any_work(tmp_path, monkeypatch, args, message):
    monkeypatch.setattr(fullsize, "build_pipeline", lambda *a, **k: pytest.fail("built a model"))
    result = CliRunner().invoke(app, ["bench", "full-size", *[a.replace("{tmp}", str(tmp_path)) for a in args]])
    assert result.exit_code == 2 and message in result.output
