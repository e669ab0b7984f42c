"""Every input gets a right answer or a one-line error (issue #33): image files read as a viewer shows them,
damaged keys, output paths checked first, shapes, seeds and sizes, offline hub ids, file modes, dataset runs,
a fast `--help`, and the smaller silent behaviours."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import entry_point, run
from PIL import Image
from safetensors.torch import load_file, save_file

import diffinv
from diffinv.applications.watermark import WatermarkKey, make_key
from diffinv.cli import app
from diffinv.utils.images import load_images


def one_line_error(result, *fragments):
    """Exit status 2, no traceback, and an `error:` line holding every fragment."""
    text = result.output if hasattr(result, "output") else result.stderr
    assert result.exit_code == 2 if hasattr(result, "exit_code") else result.returncode == 2, text
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    for fragment in fragments:
        assert fragment in lines[0], text


@pytest.fixture(scope="module")
def generated(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "run"
    result = run("generate", "--model", model_dir, "--prompt", "a red circle", "--seed", 3, "--steps", 3,
                 "--guidance", 1, "--out", out)
    assert result.exit_code == 0, result.output
    return out


# 1. image files as a viewer shows them


def test_16_bit_grey_keeps_its_values(tmp_path):
    values = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    loaded = load_images([tmp_path / "grey16.png"], 8)
    expected = torch.from_numpy(values.astype(np.float64) / 65535 * 2 - 1).float()
    assert torch.allclose(loaded.tensor[0, 0], expected, atol=1e-5)
    assert torch.equal(loaded.tensor[0, 0], loaded.tensor[0, 2])  # grey in all three channels
    assert loaded.tensor.min() == -1 and loaded.tensor.max() > 0.99  # not the all-white image clipping gave
    assert len(loaded.notes) == 1 and "16-bit" in loaded.notes[0]


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:8, :, 3] = 255  # top half opaque, bottom half transparent
    rgba[8:12, :, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    loaded = load_images([tmp_path / "rgba.png"], 8)
    pixel = lambda row: ((loaded.tensor[0, :, row, 0] + 1) * 127.5).round().tolist()  # noqa: E731
    assert pixel(0) == [255, 0, 0] and pixel(14) == [255, 255, 255]
    assert pixel(9)[0] == 255 and 120 <= pixel(9)[1] <= 135  # half red on white
    assert loaded.notes == ["rgba.png: transparency composited on white"]


def test_exif_orientation_and_animation_are_applied_and_noted(tmp_path):
    picture = Image.new("RGB", (16, 8), (255, 0, 0))
    exif = picture.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    picture.save(tmp_path / "rotated.jpg", exif=exif)
    loaded = load_images([tmp_path / "rotated.jpg"], 8)
    assert loaded.tensor.shape == (1, 3, 16, 8) and "EXIF orientation 6" in loaded.notes[0]
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    loaded = load_images([tmp_path / "anim.gif"], 8)
    assert loaded.tensor[0, 0, 0, 0] > 0.9 and loaded.tensor[0, 2, 0, 0] < -0.9  # the first (red) frame
    assert len(loaded.notes) == 1 and "first of 2 frames" in loaded.notes[0]


def test_an_8_bit_rgb_image_reads_as_before(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "rgb.png")
    loaded = load_images([tmp_path / "rgb.png"], 8)
    assert torch.equal(loaded.tensor[0], torch.from_numpy(array.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1))
    assert loaded.notes == []


# 2. damaged Tree-Ring keys


def test_a_damaged_key_is_refused_and_nan_scores_give_no_verdict(tmp_path):
    key = make_key((4, 8, 8), radius=2)
    key.save(tmp_path / "key.safetensors")
    tensors = load_file(tmp_path / "key.safetensors")
    metadata = {"diffinv": "tree-ring key", "settings": json.dumps({"channel": 3, "radius": 2, "kind": "ring", "seed": 0})}
    tensors["real"][3, 4, 4] = float("nan")
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match="non-finite"):
        WatermarkKey.load(tmp_path / "nan.safetensors")
    tensors = load_file(tmp_path / "key.safetensors")
    save_file({**tensors, "real": tensors["real"].double()}, str(tmp_path / "dtype.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match="dtypes"):
        WatermarkKey.load(tmp_path / "dtype.safetensors")
    save_file({**tensors, "real": tensors["real"][:2]}, str(tmp_path / "shape.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match="shapes"):
        WatermarkKey.load(tmp_path / "shape.safetensors")
    raw = bytearray((tmp_path / "key.safetensors").read_bytes())
    header = int.from_bytes(raw[:8], "little")
    start, end = json.loads(raw[8: 8 + header])["real"]["data_offsets"]
    raw[8 + header + start: 8 + header + end] = b"\xff" * (end - start)  # damaged tensor bytes: NaNs in the pattern
    (tmp_path / "bytes.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="damaged|non-finite"):
        WatermarkKey.load(tmp_path / "bytes.safetensors")
    from diffinv.applications.watermark import Detection

    found = Detection(torch.tensor([float("nan")]), torch.tensor([0.5]), torch.tensor([0.1]), inversion=None)
    with pytest.raises(FloatingPointError, match="no verdict"):
        found.check_finite()


def test_detect_refuses_a_key_for_other_latents(model_dir, generated, tmp_path):
    make_key((4, 16, 16), radius=3).save(tmp_path / "big.safetensors")
    result = run("watermark", "detect", generated / "image.png", "--key", tmp_path / "big.safetensors",
                 "--model", model_dir, "--steps", 2)
    one_line_error(result, "big.safetensors", "[4, 16, 16]", "[4, 8, 8]")


# 3. output paths checked before any work


@pytest.mark.parametrize("make", ["folder", "read-only place"])
def test_bench_json_path_is_checked_before_the_run(tmp_path, make):
    target = tmp_path / "rows.json"
    if make == "folder":
        target.mkdir()
    else:
        target = Path("/proc/diffinv-rows.json")  # not writable, whoever runs the tests (root included)
    started = time.perf_counter()
    result = entry_point("bench", "sampler-inversion", "--model", "no-such-model-folder/x/y", "--json", target)
    one_line_error(result, "--json", str(target))
    assert "no-such-model" not in result.stderr  # refused before the model was even looked for
    assert time.perf_counter() - started < 30


# 4. shapes, sizes and seeds


def test_invert_latent_of_the_wrong_shape_is_one_line(model_dir, tmp_path):
    save_file({"latent": torch.randn(4, 8, 8)}, str(tmp_path / "nobatch.safetensors"))
    save_file({"latent": torch.randn(1, 3, 8, 8)}, str(tmp_path / "channels.safetensors"))
    for name, given in (("nobatch", "[4, 8, 8]"), ("channels", "[1, 3, 8, 8]")):
        result = run("invert", "--latent", tmp_path / f"{name}.safetensors", "--model", model_dir, "--steps", 2,
                     "--out", tmp_path / name)
        one_line_error(result, "[batch, 4, h, w]", given)
        assert not (tmp_path / name).exists()


def test_invert_reference_of_another_size_is_refused_before_inverting(model_dir, generated, tmp_path):
    result = run("generate", "--model", model_dir, "--prompt", "x", "--height", 32, "--width", 32, "--steps", 2,
                 "--out", tmp_path / "big")
    assert result.exit_code == 0, result.output
    result = run("invert", generated / "image.png", "--reference", tmp_path / "big", "--model", model_dir,
                 "--steps", 2, "--out", tmp_path / "inv")
    one_line_error(result, "--reference", "[1, 4, 16, 16]", "[1, 4, 8, 8]")


@pytest.mark.parametrize(("option", "value", "fragment"), [
    ("-n", 0, "--num-images"), ("-n", -1, "--num-images"), ("--height", -64, "height"), ("--height", 0, "height"),
    ("--width", 0, "width"), ("--seed", 2**64, "--seed"), ("--seed", -(2**63) - 1, "--seed"),
])
def test_generate_refuses_bad_counts_sizes_and_seeds(model_dir, tmp_path, option, value, fragment):
    result = entry_point("generate", "--model", model_dir, "--prompt", "x", "--steps", 2, option, value, "--out", tmp_path / "o")
    one_line_error(result, fragment)
    assert not (tmp_path / "o").exists()


def test_the_library_checks_seeds_and_sizes(pipe):
    with pytest.raises(ValueError, match="seed"):
        diffinv.seeded_noise(pipe, 2**64)
    with pytest.raises(ValueError, match="height"):
        diffinv.generate(pipe, "x", steps=1, height=0)
    with pytest.raises(ValueError, match="at least 1"):
        diffinv.generate(pipe, "x", steps=1, batch_size=0)


# 5. invert's default guidance


def test_invert_defaults_to_guidance_1(model_dir, generated, tmp_path):
    result = run("invert", generated / "image.png", "--model", model_dir, "--steps", 2, "--out", tmp_path / "inv")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "inv" / "report.json").read_text())["guidance"] == 1.0
    import typer.main

    command = typer.main.get_command(app).commands["invert"]
    guidance = next(param for param in command.params if param.name == "guidance")
    assert guidance.default == 1.0 and "generated with" in guidance.help


# 6. hub ids that are not on the machine


def test_a_hub_id_offline_fails_at_once(monkeypatch):
    from huggingface_hub import constants

    from diffinv.models.loading import ModelNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="not on this machine") as caught:
        diffinv.load("nobody-here/no-such-model")
    assert time.perf_counter() - started < 5
    assert "no-such-model" in str(caught.value) and "local diffusers folder" in str(caught.value)
    assert "\n" not in str(caught.value)


# 8. file modes


def test_outputs_respect_the_umask(model_dir, generated, tmp_path):
    previous = os.umask(0o022)
    try:
        result = run("invert", generated / "image.png", "--model", model_dir, "--steps", 2, "--out", tmp_path / "one")
        assert result.exit_code == 0, result.output
        from diffinv.applications.dataset import collect, invert_dataset

        images = tmp_path / "images"
        images.mkdir()
        Image.open(generated / "image.png").save(images / "a.png")
        invert_dataset(diffinv.load(model_dir), collect([images]), tmp_path / "data", dict(steps=2, guidance=1.0),
                       progress=False)
    finally:
        os.umask(previous)
    written = [p for p in (tmp_path / "one").iterdir()] + [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in written) and any(p.name == "results.jsonl" for p in written)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# 9. dataset runs


def test_dataset_results_go_to_results_jsonl_and_failures_are_named(model_dir, generated, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.open(generated / "image.png").save(images / "a.png")
    Image.open(generated / "image.png").resize((32, 32)).save(images / "b_big.png")  # another size: inverted as itself
    Image.new("RGB", (17, 17)).save(images / "c_odd.png")  # not a multiple of the VAE factor: one named failure
    result = entry_point("invert", images, "--model", model_dir, "--steps", 2, "--out", tmp_path / "out")
    assert result.returncode == 1, result.stderr
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    status = {Path(r["path"]).name: r["status"] for r in records}
    assert status == {"a.png": "ok", "b_big.png": "ok", "c_odd.png": "error"}
    assert not (tmp_path / "out" / "shards").exists()
    assert any(line.startswith("failed:") and "c_odd.png" in line and "17x17" in line for line in result.stderr.splitlines())
    assert result.stdout == ""  # human lines go to stderr
    alone = entry_point("invert", images / "c_odd.png", "--model", model_dir, "--steps", 2, "--out", tmp_path / "alone")
    one_line_error(alone, "17x17")  # the same rule for one image
    noise = load_file(tmp_path / "out" / records[1]["outputs"] / "noise.safetensors")["noise"]
    assert noise.shape == (1, 4, 16, 16)


def test_a_single_process_run_appends_to_results_jsonl_as_it_goes(model_dir, generated, tmp_path):
    from diffinv.applications.dataset import collect, invert_dataset

    images = tmp_path / "images"
    images.mkdir()
    for name in ("a", "b", "c"):
        Image.open(generated / "image.png").save(images / f"{name}.png")
    seen = []
    import diffinv.applications.dataset as dataset

    original = dataset.append_line

    def spy(path, record):
        seen.append(Path(path).name)
        original(path, record)

    dataset.append_line = spy
    try:
        invert_dataset(diffinv.load(model_dir), collect([images]), tmp_path / "out", dict(steps=2, guidance=1.0),
                       batch_size=1, progress=False)
    finally:
        dataset.append_line = original
    assert seen == ["results.jsonl"] * 3


# 10. a fast --help and --version


def test_help_and_version_answer_without_loading_the_model_libraries():
    code = ("import sys, diffinv.cli; "
            "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
    version = entry_point("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"diffinv {diffinv.__version__}"
    assert entry_point("--help").returncode == 0


# 11. smaller silent behaviours


def test_latent_must_be_stored_under_its_key(model_dir, generated, tmp_path):
    result = run("invert", "--latent", generated / "noise.safetensors", "--model", model_dir, "--steps", 2,
                 "--out", tmp_path / "o")
    one_line_error(result, "no tensor 'latent'", "'noise'")


def test_long_prompts_are_noted(model_dir, tmp_path):
    result = entry_point("generate", "--model", model_dir, "--prompt", " ".join(["red"] * 90), "--steps", 1,
                         "--out", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:") and "cut off" in line]


def test_a_reused_out_folder_keeps_no_stale_files(model_dir, generated, tmp_path):
    out = tmp_path / "inv"
    assert run("invert", generated / "image.png", "--reference", generated, "--model", model_dir, "--steps", 2,
               "--out", out).exit_code == 0
    assert (out / "noise.png").is_file()
    (out / "notes.txt").write_text("mine")
    assert run("invert", generated / "image.png", "--model", model_dir, "--steps", 2, "--out", out).exit_code == 0
    assert not (out / "noise.png").exists() and (out / "notes.txt").read_text() == "mine"


def test_a_missing_component_is_named(model_dir, tmp_path):
    import shutil

    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    shutil.rmtree(broken / "vae")
    result = run("generate", "--model", broken, "--prompt", "x", "--steps", 1, "--out", tmp_path / "o")
    one_line_error(result, "'vae' component is missing")


def test_load_from_python_is_quiet(model_dir):
    code = f"import diffinv; diffinv.load({str(model_dir)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if "VERBOSITY" not in k})
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done.stderr


# the device and out-of-memory on every command


def test_device_option_and_out_of_memory_are_one_line(model_dir, tmp_path, monkeypatch):
    import diffinv.pipeline

    result = run("generate", "--model", model_dir, "--prompt", "x", "--steps", 1, "--device", "cuda:7", "--out", tmp_path / "o")
    one_line_error(result, "cuda")

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(diffinv.pipeline, "generate", exhausted)
    result = run("generate", "--model", model_dir, "--prompt", "x", "--steps", 1, "--device", "cpu", "--out", tmp_path / "o")
    one_line_error(result, "out of memory while running the model", "--dtype bfloat16")
    assert not (tmp_path / "o").exists()
