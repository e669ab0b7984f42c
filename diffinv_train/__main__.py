"""`python -m diffinv_train {vae,unet,export,evaluate,samples}`: make the bundled "tiny" model.

    python -m diffinv_train vae      --out runs/train          # stage 1, resumable
    python -m diffinv_train decoder  --out runs/train          # optional: decoder alone, encoder frozen
    python -m diffinv_train unet     --out runs/train          # stage 2 (needs stage 1), resumable
    python -m diffinv_train export   --out runs/train --to src/diffinv/weights/tiny
    python -m diffinv_train evaluate --model src/diffinv/weights/tiny --json runs/train/eval.json
    python -m diffinv_train samples  --model src/diffinv/weights/tiny --png docs/tiny_samples.png
    python -m diffinv_train probe    --model src/diffinv/weights/tiny --trajectories 4 --last 5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from diffinv.bench.scenes import TEXTURES

DEFAULT_OUT = Path("runs/train")
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "diffinv" / "weights" / "tiny"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m diffinv_train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("vae", help="train the autoencoder (resumes from OUT/vae)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels", type=_ints, default=(32, 64, 64))
    p.add_argument("--latent-channels", type=int, default=4)
    p.add_argument("--photo-fraction", type=float, default=0.375, help="share of photo crops in a batch")
    p.add_argument("--leaves-fraction", type=float, default=0.375, help="share of dead-leaves images in a batch")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="photo crops without channel permutation, flips and turns (the first shipped recipe)")
    p.add_argument("--flat-scenes", dest="textured", action="store_false",
                   help="flat-colour scenes instead of textured ones (the first two shipped recipes)")
    p.add_argument("--until", type=int, default=None, help="stop at this step (schedule still spans --steps)")

    p = sub.add_parser("decoder", help="fine-tune the VAE decoder alone (encoder frozen) into OUT/vae_decoder")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--until", type=int, default=None, help="stop at this step (schedule still spans --steps)")

    p = sub.add_parser("unet", help="train text encoder + UNet on the VAE's latents (resumes from OUT/unet)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--steps", type=int, default=4500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--buffer", type=int, default=2048, help="latents in the rolling training buffer")
    p.add_argument("--fresh", type=int, default=16, help="new images rendered and encoded into it per step")
    p.add_argument("--photo-fraction", type=float, default=0.125, help="share of photo crops ('a photo')")
    p.add_argument("--leaves-fraction", type=float, default=0.125, help="share of dead-leaves images ('an image')")
    p.add_argument("--weighting", choices=("uniform", "min-snr"), default="uniform", help="loss weight over timesteps")
    p.add_argument("--texture", choices=TEXTURES, default="luminance",
                   help="scene texture style: 'luminance' (one offset on every channel, clipped: the shipped model's) or "
                        "'colour' (plus a small offset per channel, reflected at 0 and 255)")
    p.add_argument("--ema", type=float, default=0.999, help="decay of the exported weight average")
    p.add_argument("--agreement", type=float, default=0.0,
                   help="weight of the conditional/unconditional agreement loss at low noise (0: off)")
    p.add_argument("--agreement-below", type=int, default=200, help="timesteps below which the agreement loss applies")
    p.add_argument("--monotone", type=float, default=0.0,
                   help="weight of the penalty on an asymmetric or negative x0-Jacobian at low noise (0: off)")
    p.add_argument("--monotone-below", type=int, default=200, help="timesteps below which the monotonicity penalty applies")
    p.add_argument("--monotone-samples", type=int, default=8, help="samples of each batch the monotonicity penalty uses")
    p.add_argument("--probe-every", type=int, default=1000, help="invertibility probe every N steps (0: never)")
    p.add_argument("--probe-at", default="ddim:50@1",
                   help="the probe's settings, SAMPLER:STEPS@GUIDANCE, comma-separated (e.g. ddim:50@1,dpm++2m:10@7.5)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="continue from an exported pipeline folder's weights (its autoencoder, text encoder, UNet)")
    p.add_argument("--vae-from", type=Path, default=None,
                   help="train a new UNet from scratch on an exported pipeline folder's autoencoder instead of OUT/vae's")
    p.add_argument("--channels", type=_ints, default=(32, 64, 128))
    p.add_argument("--text-width", type=int, default=64)
    p.add_argument("--until", type=int, default=None, help="stop at this step (schedule still spans --steps)")

    p = sub.add_parser("export", help="write the fp16 diffusers folder from the last checkpoints")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--to", type=Path, default=DEFAULT_WEIGHTS)

    p = sub.add_parser("evaluate", help="prompt adherence on held-out combos + autoencoder PSNR")
    p.add_argument("--model", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--seeds", type=int, default=4, help="samples per held-out combo")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--no-seen", dest="seen", action="store_false", help="skip the 24 training combos")

    p = sub.add_parser("samples", help="a labelled grid of generated samples")
    p.add_argument("--model", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--png", type=Path, default=Path("docs/tiny_samples.png"))
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=7.5)

    p = sub.add_parser("probe", help="is the sampler invertible? last step maps' Jacobians + exact inversion")
    p.add_argument("--model", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--trajectories", type=int, default=4, help="generated latents (held-out prompt i, seed i)")
    p.add_argument("--last", type=int, default=5, help="how many of the last step maps")
    p.add_argument("--first", type=int, default=0, help="how many of the first (noisiest) step maps, besides the last")
    p.add_argument("--solve", action="store_true",
                   help="also solve each probed step alone from exact inversion's warm start (true target and "
                        "history): residual and NMSE to the true latent")
    p.add_argument("--sampler", default="ddim", help="sampler whose steps are probed (ddim, dpm++2m, ...)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--no-inversion", dest="inversion", action="store_false", help="skip naive/exact inversion")
    p.add_argument("--branches", action="store_true",
                   help="guided probes: also each step with the conditional and the unconditional prediction alone")
    p.add_argument("--json", type=Path, default=None)

    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.command == "vae":
        from diffinv_train.vae import train_vae

        train_vae(args.out / "vae", steps=args.steps, batch=args.batch, patch=args.patch, lr=args.lr,
                  seed=args.seed, channels=args.channels, latent_channels=args.latent_channels,
                  photo_fraction=args.photo_fraction, leaves_fraction=args.leaves_fraction,
                  augmented=args.augment, textured=args.textured, until=args.until)
    elif args.command == "decoder":
        from diffinv_train.vae import finetune_decoder

        finetune_decoder(args.out, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                         until=args.until)
    elif args.command == "unet":
        from diffinv.bench.probe import parse_probe_settings
        from diffinv_train.unet import train_unet

        try:
            probe_settings = parse_probe_settings(args.probe_at)
        except ValueError as error:
            parser.error(str(error))
        train_unet(args.out, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, buffer=args.buffer,
                   fresh=args.fresh, photo_fraction=args.photo_fraction, leaves_fraction=args.leaves_fraction,
                   weighting=args.weighting, ema=args.ema, probe_every=args.probe_every, texture=args.texture,
                   probe_settings=probe_settings, agreement=args.agreement, agreement_below=args.agreement_below,
                   monotone=args.monotone, monotone_below=args.monotone_below, monotone_samples=args.monotone_samples,
                   channels=args.channels, text_width=args.text_width, until=args.until, init_from=args.init_from,
                   vae_from=args.vae_from)
    elif args.command == "export":
        from diffinv_train.export import export

        print(export(args.out, args.to))
    elif args.command == "evaluate":
        from diffinv_train.evaluate import evaluate, format_table

        results = evaluate(args.model, seeds=args.seeds, steps=args.steps, guidance=args.guidance,
                           seen=args.seen)
        print(format_table(results))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2))
    elif args.command == "samples":
        from diffinv_train.evaluate import sample_grid

        print(sample_grid(args.model, args.png, seeds=args.seeds, steps=args.steps, guidance=args.guidance))
    elif args.command == "probe":
        from diffinv_train.evaluate import load_pipeline
        from diffinv.bench.probe import format_probe, invertibility

        rows = invertibility(load_pipeline(args.model), trajectories=args.trajectories, last=args.last,
                             steps=args.steps, guidance=args.guidance, inversion=args.inversion,
                             sampler=args.sampler, branches=args.branches, first=args.first, solve=args.solve)
        print(format_probe(rows))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
