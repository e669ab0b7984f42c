"""Dataset runs: folders with bad files, resuming after SIGKILL, two processes, manifests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import diffinv
from diffinv.applications.dataset import append_line, collect, read_lines

COMMON = ["--steps", "3", "--guidance", "1", "--sampler", "ddim", "--batch-size", "3"]


@pytest.fixture(scope="module")
def folder(pipe, tmp_path_factory):
    """20 files: 18 generated images (16x16), one corrupt file, one image of the wrong size."""
    root = tmp_path_factory.mktemp("data") / "images"
    root.mkdir()
    made = diffinv.generate(pipe, "a red circle", noise=torch.randn(18, 4, 8, 8, generator=torch.Generator().manual_seed(0)),
                            steps=3, guidance=1.0)
    for i, image in enumerate(made.images):
        image.save(root / f"img{i:02d}.png")
    (root / "img05b.png").write_text("not an image")
    Image.new("RGB", (25, 25), (200, 10, 10)).save(root / "img11b.png")  # not a multiple of the VAE factor
    return root


def cli(model_dir, *args, env=None, **popen):
    command = [sys.executable, "-m", "diffinv.cli", "invert", *map(str, args), "--model", str(model_dir), *COMMON]
    return subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finished(process) -> tuple[int, str]:
    """Exit status and the standard error (the summary and the failures, after the progress bars; stdout is
    left for machine-readable output)."""
    out, err = process.communicate(timeout=600)
    assert "Traceback" not in err, err[-2000:]
    return process.returncode, err


def outputs(out: Path) -> dict[str, torch.Tensor]:
    """path -> recovered noise, for every done line of results.jsonl."""
    found = {}
    for record in read_lines(out / "results.jsonl"):
        if record["status"] == "ok":
            found[record["path"]] = load_file(out / record["outputs"] / "noise.safetensors")["noise"]
    return found


@pytest.fixture(scope="module")
def straight(model_dir, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "out"
    code, text = finished(cli(model_dir, folder, "--out", out))
    return out, code, text


def test_bad_files_become_error_lines_and_the_run_goes_on(straight):
    out, code, text = straight
    records = read_lines(out / "results.jsonl")
    assert len(records) == 20 and [r["index"] for r in records] == list(range(20))
    errors = {Path(r["path"]).name: r["error"] for r in records if r["status"] == "error"}
    assert set(errors) == {"img05b.png", "img11b.png"}
    assert "not a readable image" in errors["img05b.png"] and "25x25" in errors["img11b.png"]
    assert code == 1 and "18 of 20 images done, 2 failed" in text.strip().splitlines()[-1]
    assert not list((out / "shards").glob("*.jsonl"))  # merged


def test_rerun_skips_what_is_done_and_overwrite_redoes_it(model_dir, folder, straight, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(straight[0], out)
    code, text = finished(cli(model_dir, folder, "--out", out))
    assert "0 inverted, 18 already done, 2 failed" in text
    code, text = finished(cli(model_dir, folder, "--out", out, "--overwrite"))
    assert "18 inverted, 0 already done" in text


def test_killed_run_resumes_to_the_uninterrupted_results(model_dir, folder, straight, tmp_path):
    out = tmp_path / "out"
    process = cli(model_dir, folder, "--out", out)
    shard = out / "results.jsonl"  # a single process appends to results.jsonl as it goes
    deadline = time.time() + 300
    while time.time() < deadline and len(read_lines(shard)) < 5:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = read_lines(shard)
    assert 5 <= len(partial) < 20  # killed mid-way
    assert shard.read_text().endswith("\n")  # no torn line
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no half-written temporary file left visible as output
    code, text = finished(cli(model_dir, folder, "--out", out))
    assert f"{18 - sum(r['status'] == 'ok' for r in partial)} inverted" in text
    again, before = outputs(out), outputs(straight[0])
    assert again.keys() == before.keys() and len(again) == 18
    assert all(torch.equal(again[path], before[path]) for path in before)


def test_two_processes_equal_one(model_dir, folder, straight, tmp_path):
    out = tmp_path / "out"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
                "-m", "diffinv.cli", "invert", str(folder), "--model", str(model_dir), *COMMON, "--out", str(out)]
    result = subprocess.run(torchrun, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-2000:]  # two images fail, in either process
    assert result.stderr.count("images done") == 1  # the summary comes from the main process only
    merged, single = read_lines(out / "results.jsonl"), read_lines(straight[0] / "results.jsonl")
    assert [(r["path"], r["status"]) for r in merged] == [(r["path"], r["status"]) for r in single]
    two, one = outputs(out), outputs(straight[0])
    assert all(torch.equal(two[path], one[path]) for path in one)  # the same batches, whichever process ran them


def test_manifests_and_globs(folder, tmp_path):
    (tmp_path / "list.txt").write_text(f"{folder}/img01.png\n\n# a comment\n{folder}/img02.png\n")
    (tmp_path / "list.jsonl").write_text(json.dumps({"path": str(folder / "img03.png"), "label": 1, "prompt": "x"}) + "\n")
    items = collect([tmp_path / "list.txt", tmp_path / "list.jsonl", f"{folder}/img1?.png"])
    assert [i.path.name for i in items][:3] == ["img01.png", "img02.png", "img03.png"]
    assert items[2].label == 1 and items[2].prompt == "x" and len(items) == 3 + 8  # img10..img17
    (tmp_path / "bad.jsonl").write_text("{\"nopath\": 1}\n")
    with pytest.raises(ValueError, match="needs a \"path\""):
        collect([tmp_path / "bad.jsonl"])
    with pytest.raises(ValueError, match="no images found"):
        collect([tmp_path / "nothing*.png"])


def test_lines_are_whole(tmp_path):
    path = tmp_path / "r.jsonl"
    append_line(path, {"a": 1})
    with open(path, "a") as handle:
        handle.write('{"torn": ')  # a writer killed mid-line by something else
    assert read_lines(path) == [{"a": 1}]


def test_watermark_scores_of_a_labelled_dataset(tmp_path):
    from diffinv.applications.watermark import embed, make_key, score_dataset
    from diffinv.utils.outputs import save_tensor

    keys = [make_key((4, 8, 8), radius=3, seed=s) for s in (0, 1)]
    generator = torch.Generator().manual_seed(0)
    records = []
    for i, label in enumerate(["clean"] * 6 + [0] * 6 + ["key1"] * 6):
        noise = torch.randn(1, 4, 8, 8, generator=generator)
        if label != "clean":
            noise = embed(noise, keys[0 if label == 0 else 1])
        folder = tmp_path / f"n{i}"
        folder.mkdir()
        save_tensor(folder / "noise.safetensors", "noise", noise)
        records.append({"status": "ok", "path": f"img{i}.png", "label": label, "outputs": f"n{i}"})
    records.append({"status": "error", "path": "bad.png", "label": 0})
    rows, metrics = score_dataset(records, tmp_path, keys)
    assert len(rows) == 18 and metrics["clean"] == 6 and metrics["watermarked_images"] == 12
    assert metrics["auc"] == 1.0 and metrics["tpr_at_1fpr"] == 1.0 and metrics["attribution_accuracy"] == 1.0
    assert metrics["score"] == "correlation" and rows[0]["correlation"] == pytest.approx(rows[0]["correlations"][0])
    rows, metrics = score_dataset(records, tmp_path, keys, score="correlation")
    assert metrics["score"] == "correlation" and metrics["auc"] == 1.0 and metrics["attribution_accuracy"] == 1.0
    assert all(row["correlation"] > 0.99 for row in rows if row["label"] == 0)
    with pytest.raises(ValueError, match="names no key"):
        score_dataset([{**records[7], "label": "blue"}], tmp_path, keys)
    with pytest.raises(ValueError, match="unknown watermark score"):
        score_dataset(records, tmp_path, keys, score="l2")


def test_cli_watermark_detect_over_a_manifest(model_dir, folder, tmp_path):
    from typer.testing import CliRunner

    from diffinv.cli import app

    runner = CliRunner()
    keys = []
    for seed in (0, 1):
        result = runner.invoke(app, ["watermark", "embed", "--model", str(model_dir), "--prompt", "a red circle", "--seed",
                                     str(seed), "--steps", "3", "--key-seed", str(seed), "--out", str(tmp_path / f"wm{seed}")])
        assert result.exit_code == 0, result.output
        keys += ["--key", str(tmp_path / f"wm{seed}" / "key.safetensors")]
    lines = [{"path": str(tmp_path / "wm0" / "image.png"), "label": 0}, {"path": str(tmp_path / "wm1" / "image.png"), "label": 1},
             {"path": str(folder / "img00.png"), "label": "clean"}, {"path": str(folder / "img01.png"), "label": "clean"}]
    (tmp_path / "set.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    result = runner.invoke(app, ["watermark", "detect", str(tmp_path / "set.jsonl"), *keys, "--model", str(model_dir),
                                 "--steps", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    detection = json.loads((out / "detection.json").read_text())
    assert {"auc", "tpr_at_1fpr", "attribution_accuracy"} <= set(detection["metrics"]) and len(detection["rows"]) == 4


def test_rerun_does_not_invert_a_batch_again_for_its_bad_file(pipe, folder, tmp_path, monkeypatch):
    import diffinv.applications.dataset as dataset

    items = collect([folder])[:8]  # img00..img06 and the corrupt img05b: batches of four, the second with it
    settings = dict(prompt="", sampler="ddim", steps=2, guidance=1.0, method="naive", decoder="encoder")
    calls = []
    real = dataset._invert_batch
    monkeypatch.setattr(dataset, "_invert_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = dataset.invert_dataset(pipe, items, tmp_path, settings, batch_size=4, progress=False)
    again = dataset.invert_dataset(pipe, items, tmp_path, settings, batch_size=4, progress=False)
    assert (first.done, first.failed) == (7, 1) and (again.done, again.skipped, again.failed) == (0, 7, 1)
    assert len(calls) == 2  # both batches once, none on the rerun
