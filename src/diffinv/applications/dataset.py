"""Inversion over whole datasets: streamed in batches, resumable, shared across processes.

Inputs are a folder (its image files, sorted), a glob, or a manifest: a text file of paths (one per
line) or a JSONL file of {"path": ..., "label": ..., "prompt": ...} objects, paths relative to the
manifest. The items are cut into fixed batches of `batch_size` (under `accelerate launch` or `torchrun`
each process takes every `num_processes`-th batch), so a batch always holds the same images, whatever
was done before: a resumed or sharded run computes exactly what an uninterrupted one does.

A single process appends one JSON line per image to `out/results.jsonl` itself; under several processes
each appends to its own shard (`out/shards/results-{rank}.jsonl`). A line is written whole in one `write`
on an append-only file, after the image's outputs are in place
(`out/images/{key}/noise.safetensors`, `latent.safetensors`, `reconstruction.png`, each written under
a temporary name and renamed). An image is done when its line says so; rerunning the same command
skips images done with the same settings (keyed by the file's content hash and the settings' hash).
At the end the main process rewrites `out/results.jsonl` with the shards merged in, one line per input in
input order (written to a temporary file, then renamed), and removes the shards. Unreadable images, and
images whose sides are not multiples of the VAE factor, become error lines and the run goes on; images of
other sizes than the model's are inverted at their own size, as a single image is (`--resize` resizes both).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from diffinv.pipeline import default_image_side, invert, reconstruct
from diffinv.utils.images import ImageError, load_images, tensor_to_pil
from diffinv.utils.metrics import psnr, ssim
from diffinv.utils.outputs import save_tensor, write_atomically
from diffinv.utils.sources import IMAGE_SUFFIXES, MANIFEST_SUFFIXES


@dataclass(frozen=True)
class Item:
    """One input: its position in the dataset, its path, and optionally a label and its own prompt."""

    index: int
    path: Path
    label: Any = None
    prompt: str | None = None


def collect(sources: Sequence[str | Path]) -> list[Item]:
    """The items named by folders, globs, manifests and plain paths, in order (missing files are kept:
    they become error lines when their turn comes)."""
    entries: list[tuple[Path, Any, str | None]] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            entries += [(p, None, None) for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        elif glob.has_magic(str(source)):
            entries += [(Path(p), None, None) for p in sorted(glob.glob(str(source), recursive=True))
                        if Path(p).suffix.lower() in IMAGE_SUFFIXES]
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            entries += _manifest(path)
        else:
            entries.append((path, None, None))
    if not entries:
        raise ValueError(f"no images found in {', '.join(str(s) for s in sources)}")
    return [Item(i, p, label, prompt) for i, (p, label, prompt) in enumerate(entries)]


def _manifest(path: Path) -> list[tuple[Path, Any, str | None]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if path.suffix.lower() == ".jsonl":
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{number}: not a JSON object") from None
            if not isinstance(record, dict) or not isinstance(record.get("path"), str):
                raise ValueError(f"{path}:{number}: each line needs a \"path\"")
            entries.append((path.parent / record["path"], record.get("label"), record.get("prompt")))
        else:
            entries.append((path.parent / line.strip(), None, None))
    return entries


def settings_key(settings: dict[str, Any]) -> str:
    """A short stable hash of the settings that decide an image's results."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def content_key(path: Path) -> str:
    """The SHA-256 of a file's bytes (raises OSError when it cannot be read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line with a single write on an O_APPEND file, then fsync: a line is never torn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(record, default=str) + "\n").encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of a results file (a final line without its newline is ignored)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().split("\n")[:-1]:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


@dataclass
class Summary:
    """What a dataset run did in this process, and the merged results (main process)."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    results: Path | None = None
    records: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.done} inverted, {self.skipped} already done, {self.failed} failed"


@dataclass(frozen=True)
class Distribution:
    """This process's place among the processes of a run (one process unless launched by accelerate/torchrun)."""

    index: int = 0
    count: int = 1
    wait: Callable[[], None] = lambda: None
    device: str = "cpu"  # this process's own device (cuda:N on a GPU machine)

    @property
    def main(self) -> bool:
        return self.index == 0

    @classmethod
    def detect(cls) -> "Distribution":
        """accelerate's process state when launched with several processes, else a single process."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available())  # gloo on CPUs, NCCL on GPUs
        return cls(state.process_index, state.num_processes, state.wait_for_everyone, str(state.device))


def invert_dataset(
    pipe,
    items: Sequence[Item],
    out: str | Path,
    settings: dict[str, Any],
    batch_size: int = 8,
    resize: bool = False,
    overwrite: bool = False,
    distribution: Distribution | None = None,
    progress: bool = True,
) -> Summary:
    """Invert every item (see the module docstring); `settings` are `diffinv.invert`'s keyword arguments
    (prompt, sampler, steps, guidance, method, decoder, method_options, decoder_options) plus anything
    else that should key the results (the model's name)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    distribution = distribution or Distribution()
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    shard = out / "results.jsonl" if distribution.count == 1 else out / "shards" / f"results-{distribution.index}.jsonl"
    key = settings_key({**settings, "resize": resize})
    done = set() if overwrite else {(r["path"], r["image_key"]) for r in _all_records(out)
                                     if r.get("status") == "ok" and r.get("settings_key") == key}
    batches = [list(items[start: start + batch_size]) for start in range(0, len(items), batch_size)]
    mine = batches[distribution.index:: distribution.count]
    summary = Summary()
    bar = tqdm(total=sum(len(b) for b in mine), desc="inverting images", unit="image",
               disable=not (progress and distribution.main))
    size = default_image_side(pipe)
    for batch in mine:
        hashes = {item.index: _hash_or_error(item) for item in batch}
        todo = [item for item in batch if isinstance(hashes[item.index], str)
                and (str(item.path), hashes[item.index]) not in done]
        if not todo and all(isinstance(h, str) for h in hashes.values()):
            summary.skipped += len(batch)
            bar.update(len(batch))
            continue
        loaded, errors = [], {}
        for item in batch:
            if not isinstance(hashes[item.index], str):
                errors[item.index] = hashes[item.index][0]
                continue
            try:
                loaded.append((item, load_images([item.path], pipe.vae_scale_factor, size=(size, size), resize=resize).tensor))
            except ImageError as error:
                errors[item.index] = str(error)
        # Only when something new loaded: a batch whose new items all failed is not inverted again for the rest.
        fresh = any(item in todo for item, _ in loaded)
        records = _invert_batch(pipe, loaded, settings, key, hashes, out) if fresh else {}
        for item in batch:
            is_new = item in todo or item.index in errors
            if not is_new:
                summary.skipped += 1
                continue
            if item.index in errors:
                record = {"index": item.index, "path": str(item.path), "label": item.label, "status": "error",
                          "error": errors[item.index], "settings_key": key}
                summary.failed += 1
            else:
                record = records[item.index]
                summary.done += 1
            append_line(shard, record)
        bar.update(len(batch))
    bar.close()
    distribution.wait()
    if distribution.main:
        summary.results, summary.records = merge(out, items, key)
    distribution.wait()
    return summary


def _hash_or_error(item: Item) -> str | tuple[str]:
    try:
        return content_key(item.path)
    except FileNotFoundError:
        return (f"{item.path}: no such file",)
    except OSError as error:
        return (f"{item.path}: cannot be read ({error.strerror or error})",)


def _invert_batch(pipe, loaded, settings, key, hashes, out) -> dict[int, dict[str, Any]]:
    """Invert one batch, its images of each size together; write each image's outputs atomically; return
    each image's record."""
    by_size: dict[tuple[int, ...], list] = {}
    for item, tensor in loaded:
        by_size.setdefault(tuple(tensor.shape), []).append((item, tensor))
    records = {}
    for group in by_size.values():
        records.update(_invert_group(pipe, group, settings, key, hashes, out))
    return records


def _invert_group(pipe, loaded, settings, key, hashes, out) -> dict[int, dict[str, Any]]:
    items = [item for item, _ in loaded]
    images = torch.cat([tensor for _, tensor in loaded])
    default_prompt = settings.get("prompt", "")
    prompts = [item.prompt if item.prompt is not None else default_prompt for item in items]
    options = {k: v for k, v in settings.items() if k not in ("prompt", "model", "dtype")}
    result = invert(pipe, images, prompt=prompts, **options)
    regenerated = reconstruct(pipe, result, prompts, options.get("negative_prompt"))
    records = {}
    for row, item in enumerate(items):
        folder = out / "images" / f"{hashes[item.index][:16]}-{key[:8]}"
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / "noise.safetensors", lambda p: save_tensor(p, "noise", result.noise[row: row + 1]))
        write_atomically(folder / "latent.safetensors", lambda p: save_tensor(p, "latent", result.latent[row: row + 1]))
        write_atomically(folder / "reconstruction.png", lambda p: tensor_to_pil(regenerated.image[row: row + 1])[0].save(p, format="PNG"))
        report = {k: v for k, v in result.report.items() if k != "step_residuals"}
        records[item.index] = {
            "index": item.index, "path": str(item.path), "label": item.label, "prompt": prompts[row], "status": "ok",
            "image_key": hashes[item.index], "settings_key": key, "outputs": str(folder.relative_to(out)),
            "psnr": psnr(regenerated.image[row: row + 1], images[row: row + 1]),
            "ssim": ssim(regenerated.image[row: row + 1], images[row: row + 1]),
            "batch_size": len(items), **{f"batch_{k}": v for k, v in report.items() if k in ("nfe", "seconds", "peak_memory_bytes")},
            "converged": result.converged,
        }
    return records


def _all_records(out: Path) -> Iterable[dict[str, Any]]:
    yield from read_lines(out / "results.jsonl")
    for shard in sorted((out / "shards").glob("results-*.jsonl")):
        yield from read_lines(shard)


def merge(out: Path, items: Sequence[Item], key: str) -> tuple[Path, list[dict[str, Any]]]:
    """Write out/results.jsonl: for each input (in input order) its latest line with these settings (a done
    line over an error line); lines of other settings or other inputs are kept after them. Shards go."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    others: list[dict[str, Any]] = []
    for record in _all_records(out):
        if record.get("settings_key") != key:
            others.append(record)
            continue
        slot = (record["path"], record.get("settings_key"))
        if slot not in latest or record.get("status") == "ok" or latest[slot].get("status") != "ok":
            latest[slot] = record
    ordered = [latest.pop((str(item.path), key)) for item in items if (str(item.path), key) in latest]
    records = ordered + list(latest.values()) + others
    target = out / "results.jsonl"
    write_atomically(target, lambda p: p.write_text("".join(json.dumps(r, default=str) + "\n" for r in records)))
    for shard in (out / "shards").glob("results-*.jsonl"):
        shard.unlink()
    if (out / "shards").is_dir() and not any((out / "shards").iterdir()):
        (out / "shards").rmdir()
    return target, ordered
