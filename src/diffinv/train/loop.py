"""The training loop both stages share: seeded per-step randomness, LR schedule, resumable checkpoints."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm


def step_rng(seed: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """numpy and torch generators for one training step: resuming at `step` replays the same data."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return np.random.default_rng([seed, step]), gen


def lr_at(step: int, total: int, peak: float, warmup: int = 100, floor: float = 0.02) -> float:
    """Linear warmup then cosine decay to `floor` * peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(folder: Path, step: int, state: dict, keep: int = 2) -> Path:
    """Write `state` (with `step`) to folder/step_XXXXXX.pt atomically, then prune to the last `keep`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:07d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({**state, "step": step}, tmp)
    tmp.replace(path)
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink()
    return path


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest step_*.pt in `folder`, or None."""
    found = sorted(Path(folder).glob("step_*.pt"))
    return found[-1] if found else None


def train(
    folder: Path,
    modules: dict[str, torch.nn.Module],
    loss_fn: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    seed: int,
    config: dict,
    save_every: int = 200,
    log_every: int = 25,
    warmup: int = 100,
    until: int | None = None,
) -> int:
    """Run AdamW on `modules` for `steps` steps of `loss_fn(step)`, resuming from folder's last checkpoint.

    `until` stops early (with a checkpoint) at that step without changing the LR schedule, which is
    always laid out over `steps`. Returns the step reached. `config` (the model and run settings) is
    stored with every checkpoint.
    """
    end = steps if until is None else min(steps, until)
    folder = Path(folder)
    params = [p for m in modules.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    start = 0
    last = latest_checkpoint(folder)
    if last is not None:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        for name, module in modules.items():
            module.load_state_dict(ckpt["modules"][name])
        opt.load_state_dict(ckpt["optimizer"])
        start = int(ckpt["step"])
        print(f"resumed from {last} at step {start}", flush=True)
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))

    def state() -> dict:
        return {"modules": {k: m.state_dict() for k, m in modules.items()}, "optimizer": opt.state_dict(),
                "config": config}

    for m in modules.values():
        m.train()
    t0, running = time.time(), []
    bar = tqdm(range(start, end), initial=start, total=end, disable=not sys.stderr.isatty())
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        running.append(loss.item())
        if (step + 1) % log_every == 0:
            msg = f"step {step + 1}/{steps} loss {np.mean(running):.5f} lr {opt.param_groups[0]['lr']:.2e} " \
                  f"elapsed {time.time() - t0:.0f}s"
            bar.set_postfix_str(f"loss {np.mean(running):.4f}")
            if not sys.stderr.isatty():
                print(msg, flush=True)
            with open(folder / "loss.txt", "a") as f:
                f.write(msg + "\n")
            running = []
        if (step + 1) % save_every == 0 or step + 1 == end:
            save_checkpoint(folder, step + 1, state())
    return max(start, end)


def load_modules(folder: Path, modules: dict[str, torch.nn.Module]) -> int:
    """Load the last checkpoint's weights of `folder` into `modules`; return its step."""
    last = latest_checkpoint(folder)
    if last is None:
        raise FileNotFoundError(f"no checkpoint step_*.pt in {folder}")
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    for name, module in modules.items():
        module.load_state_dict(ckpt["modules"][name])
    return int(ckpt["step"])
