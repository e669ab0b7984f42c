"""The training loop both stages share: seeded per-step randomness, LR schedule, resumable checkpoints."""

from __future__ import annotations

import copy
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


class ExponentialAverage:
    """An exponential moving average of modules' weights (what diffusion models export): decay
    min(`decay`, (1 + n) / (10 + n)) after n updates, so early averages are not stuck at the initial
    weights."""

    def __init__(self, modules: dict[str, torch.nn.Module], decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.modules = {k: copy.deepcopy(m).requires_grad_(False).eval() for k, m in modules.items()}

    @torch.no_grad()
    def update(self, modules: dict[str, torch.nn.Module]) -> None:
        weight = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, module in modules.items():
            average = self.modules[name].state_dict()
            for key, value in module.state_dict().items():
                if value.dtype.is_floating_point:
                    average[key].lerp_(value, 1 - weight)
                else:
                    average[key].copy_(value)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"updates": self.updates, "modules": {k: m.state_dict() for k, m in self.modules.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"][name])


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
    ema_decay: float | None = None,
    extra_state: tuple[Callable[[], dict], Callable[[dict], None]] | None = None,
    on_checkpoint: Callable[[int, dict[str, torch.nn.Module]], None] | None = None,
) -> int:
    """Run AdamW on `modules` for `steps` steps of `loss_fn(step)`, resuming from folder's last checkpoint.

    `until` stops early (with a checkpoint) at that step without changing the LR schedule, which is
    always laid out over `steps`. Returns the step reached. `config` (the model and run settings) is
    stored with every checkpoint. `ema_decay` keeps an `ExponentialAverage` of the weights in the
    checkpoints (`load_modules(..., average=True)` reads it); `extra_state` = (get, set) saves and
    restores the caller's own state (a data buffer) with them; `on_checkpoint(step, weights)` runs
    after each save with the averaged weights if any (an invertibility probe).
    """
    end = steps if until is None else min(steps, until)
    folder = Path(folder)
    params = [p for m in modules.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    average = ExponentialAverage(modules, ema_decay) if ema_decay is not None else None
    start = 0
    last = latest_checkpoint(folder)
    if last is not None:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        for name, module in modules.items():
            module.load_state_dict(ckpt["modules"][name])
        opt.load_state_dict(ckpt["optimizer"])
        if average is not None:
            average.load_state_dict(ckpt["average"])
        if extra_state is not None:
            extra_state[1](ckpt["extra"])
        start = int(ckpt["step"])
        print(f"resumed from {last} at step {start}", flush=True)
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))

    def state() -> dict:
        saved = {"modules": {k: m.state_dict() for k, m in modules.items()}, "optimizer": opt.state_dict(),
                 "config": config}
        if average is not None:
            saved["average"] = average.state_dict()
        if extra_state is not None:
            saved["extra"] = extra_state[0]()
        return saved

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
        if average is not None:
            average.update(modules)
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
            if on_checkpoint is not None:
                on_checkpoint(step + 1, average.modules if average is not None else modules)
                for m in modules.values():
                    m.train()
    return max(start, end)


def load_modules(folder: Path, modules: dict[str, torch.nn.Module], average: bool = True) -> int:
    """Load the last checkpoint's weights of `folder` into `modules` (its exponential average of the
    weights when it has one and `average`); return its step."""
    last = latest_checkpoint(folder)
    if last is None:
        raise FileNotFoundError(f"no checkpoint step_*.pt in {folder}")
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    weights = ckpt["average"]["modules"] if average and "average" in ckpt else ckpt["modules"]
    for name, module in modules.items():
        module.load_state_dict(weights[name])
    return int(ckpt["step"])
