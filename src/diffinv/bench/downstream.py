"""The decoder inversion's effect downstream: the noise recovered from the model's own samples, saved as image
files, through each decoder inversion and then a sampler inversion (`run_downstream_benchmark`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffinv.bench.decoder import _finite, saved_image
from diffinv.bench.tables import format_table, write_rows
from diffinv.decoder import check_decoder_name
from diffinv.utils.metrics import nmse, to_db
from diffinv.utils.specs import parse_spec


#: Decoder inversions compared downstream: the encoder, and the two best methods fitted as they were
#: before the clip-aware fit (clipped=false) and to what the file holds.
DOWNSTREAM_DECODERS: tuple[str, ...] = (
    "encoder",
    "forward-step:iterations=300,clipped=false",
    "forward-step:iterations=300",
    "gradient:iterations=300,clipped=false",
    "gradient:iterations=300",
)


def run_downstream_benchmark(
    pipe: Any,
    prompts: Sequence[str],
    guidances: Sequence[float] = (3.0, 7.5),
    decoders: Sequence[str] = DOWNSTREAM_DECODERS,
    method: str = "exact-aa",
    steps: int = 50,
    seed: int = 0,
    out_json: str | Path | None = None,
    print_table: bool = True,
) -> list[dict[str, Any]]:
    """Noise recovered from saved samples: each decoder inversion, then the sampler inversion `method` (a benchmark label).

    The samples are the pipeline's own (`diffinv.generate`, model's default sampler, `steps` steps, one
    batch of `prompts` from `seed`), saved as 8-bit images (`saved_image`); each is inverted with its own
    prompt, sampler, steps and guidance. Rows give the latent NMSE of the decoder stage and the noise
    NMSE of z_T against the sampled noise; the "true latent" row inverts the sampled z_0 itself (the
    floor the sampler inversion leaves).
    """
    from diffinv.bench.methods import resolve_method
    from diffinv.pipeline import generate, invert

    inverse = resolve_method(method)
    parsed = [(spec, *parse_spec(spec)) for spec in decoders]
    for _, name, _ in parsed:
        check_decoder_name(name)
    rows: list[dict[str, Any]] = []
    for g in guidances:
        sample = generate(pipe, list(prompts), seed=seed, steps=steps, guidance=float(g), batch_size=len(prompts))
        images = saved_image(sample.image)
        runs = [("true latent", None, {})] + parsed
        for label, name, options in runs:
            if name is None:
                result = invert(pipe, latent=sample.latent, prompt=list(prompts), steps=steps, guidance=float(g),
                                method=inverse)
            else:
                result = invert(pipe, images, prompt=list(prompts), steps=steps, guidance=float(g), method=inverse,
                                decoder=name, decoder_options=options)
            noise_each = [nmse(a, b) for a, b in zip(result.noise, sample.noise)]
            rows.append({
                "guidance": float(g),
                "decoder": label,
                "method": method,
                "sampler": result.sampler,
                "steps": steps,
                "latent_nmse_db": _finite(to_db(nmse(result.latent, sample.latent))) if name is not None else None,
                "noise_nmse": _finite(nmse(result.noise, sample.noise)),
                "noise_nmse_each": [_finite(v) for v in noise_each],
                "decoder_seconds": result.decoder_seconds,
                "clipped_fraction": result.clipped_fraction,
            })
    if print_table:
        columns = [("guidance", "w", "g"), ("decoder", "decoder", ""), ("latent_nmse_db", "latent NMSE dB", ".2f"),
                   ("noise_nmse", "noise NMSE", ".3g"), ("decoder_seconds", "decoder s", ".1f")]
        sampler = f"{rows[0]['sampler']}-{steps}" if rows else str(steps)
        print(format_table(rows, columns, title=f"noise recovered from saved samples: decoder inversion, then {method} "
                                                f"({sampler}, each sample's prompt and guidance)"))
    if out_json is not None:
        write_rows(out_json, rows)
    return rows
