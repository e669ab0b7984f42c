"""Render the measured tables in the docs from their JSON under docs/measurements/.

A page holds a generated table between two comments:

    <!-- table: sampler -->
    ...rendered from TABLES["sampler"]...
    <!-- /table -->

`python scripts/render_tables.py --check` exits 1 when a page's table differs from its JSON;
`--write` rewrites the pages. Pages: README.md and every .md under docs/.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MEASUREMENTS = ROOT / "docs" / "measurements"
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)

Row = dict[str, Any]
#: (header, row key or function of the row, format spec or function of the value)
Column = tuple[str, "str | Callable[[Row], Any]", "str | Callable[[Any], str]"]


@dataclass
class Table:
    sources: list[str]
    columns: list[Column]
    rows: Callable[[list[Row]], list[Row]] = lambda rows: rows


def load_rows(source: str) -> list[Row]:
    """The rows of one JSON file: its "rows" list, or the object itself as one row."""
    data = json.loads((MEASUREMENTS / source).read_text())
    rows = data["rows"] if isinstance(data, dict) and "rows" in data else [data]
    for row in rows:  # runs before the sampler/scheduler naming said "scheduler"
        if "scheduler" in row:
            row.setdefault("sampler", row["scheduler"])
    return rows


def cell(value: Any, fmt: str | Callable[[Any], str]) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if callable(fmt):
        return fmt(value)
    if fmt and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, fmt)
    return str(value).replace("|", "\\|")


def is_number(text: str) -> bool:
    try:
        float(text.rstrip("%"))
    except ValueError:
        return text == "-"
    return True


def render(name: str) -> str:
    """The markdown of one table, with a line naming its source files."""
    table = TABLES[name]
    rows = table.rows([row for source in table.sources for row in load_rows(source)])
    body = [[cell(key(row) if callable(key) else row.get(key), fmt) for _, key, fmt in table.columns] for row in rows]
    numeric = [all(is_number(line[i]) for line in body) for i in range(len(table.columns))]
    lines = ["| " + " | ".join(header for header, _, _ in table.columns) + " |",
             "|" + "|".join("---:" if right else "---" for right in numeric) + "|",
             *("| " + " | ".join(line) + " |" for line in body)]
    sources = ", ".join(f"`docs/measurements/{source}`" for source in table.sources)
    return "\n".join(lines) + f"\n\n<small>Rendered from {sources}.</small>\n"


def pages() -> list[Path]:
    found = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [page for page in found if page.is_file()]


def shown(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def update(text: str, page: Path) -> str:
    """The page with every table block re-rendered."""
    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in TABLES:
            raise SystemExit(f"{shown(page)}: unknown table {name!r}")
        return match.group(1) + "\n" + render(name) + "\n" + match.group(4)

    return BLOCK.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when a page differs from its JSON")
    mode.add_argument("--write", action="store_true", help="rewrite the pages' tables")
    parser.add_argument("paths", nargs="*", type=Path, help="pages (default: README.md and docs/**/*.md)")
    args = parser.parse_args(argv)
    stale, count = [], 0
    for page in [path.resolve() for path in args.paths] or pages():
        text = page.read_text()
        count += len(BLOCK.findall(text))
        new = update(text, page)
        if new == text:
            continue
        stale.append(page)
        if args.write:
            page.write_text(new)
        else:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                                       f"{page.name} (page)", f"{page.name} (from JSON)", n=0))
    where = ", ".join(shown(page) for page in stale)
    if args.write:
        print(f"{count} tables; rewrote {len(stale)} pages" + (f": {where}" if stale else ""))
        return 0
    print(f"{count} tables checked; " + (f"{len(stale)} pages disagree with their JSON: {where}" if stale
                                           else "every page agrees with its JSON"))
    return 1 if stale else 0


# ---------------------------------------------------------------------------------------------------
# The tables. Formats shared by several.

def mb(value: float) -> str:
    return f"{value / 2**20:.1f}"


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


SAMPLER: list[Column] = [
    ("method", "method", ""), ("sampler", "sampler", ""), ("steps", "steps", "d"), ("guidance", "guidance", "g"),
    ("noise NMSE", "noise_nmse", ".2e"), ("NFE", "nfe", ".0f"), ("seconds", "seconds", ".2f"),
    ("peak MB", "peak_memory_bytes", mb), ("max step residual", "max_step_residual", ".1e"),
    ("converged", "converged", ""),
]

WATERMARK: list[Column] = [
    ("attack", "attack", ""), ("pipeline", "pipeline", ""), ("AUC", "auc", ".3f"), ("TPR@1%FPR", "tpr_at_1fpr", ".3f"),
    ("3-key accuracy", "accuracy", ".3f"), ("correct", "correct", ""), ("seconds", "seconds", ".1f"),
    ("peak MB", "peak_memory_bytes", mb),
]

EDITING: list[Column] = [
    ("images", "images", ""), ("edit", "edit", ""), ("sampler", "sampler", ""), ("steps", "steps", "d"),
    ("guidance", "guidance", "g"), ("method", lambda row: row.get("label") or row["method"], ""), ("mode", "mode", ""),
    ("bg PSNR", "background_psnr", ".2f"), ("bg SSIM", "background_ssim", ".3f"), ("edit ok", "success", ".2f"),
    ("rec PSNR", "reconstruction_psnr", ".2f"), ("NFE", "nfe", ".0f"), ("seconds", "seconds", ".2f"),
]

PROBE: list[Column] = [
    ("prompt", "prompt", ""), ("seed", "seed", "d"), ("t", "timestep", ".0f"), ("floor", "floor", ".3f"),
    ("min singular value", "min_singular", ".4f"), ("min sv / floor", "min_singular_over_floor", ".3f"),
    ("negative eigenvalues", "negative_eigenvalues", "d"), ("asymmetry", "asymmetry", ".3f"),
]

DECODER: list[Column] = [
    ("method", "method", ""), ("frames", "frames", "d"), ("iterations", "iterations", "d"),
    ("latent NMSE dB", "latent_nmse_db", ".2f"), ("PSNR", "psnr", ".2f"), ("seconds", "seconds", ".3f"),
    ("peak MB", "peak_memory_bytes", mb), ("beta_min", "cocoercivity_min", ".3g"),
]


def interleave(rows: list[Row]) -> list[Row]:
    """Rows of several watermark runs, grouped by attack in the order the first run lists them."""
    order = list(dict.fromkeys(row["attack"] for row in rows))
    return sorted(rows, key=lambda row: order.index(row["attack"]))


def reconstruction_summary(rows: list[Row]) -> list[Row]:
    """Mean PSNR / SSIM per image set and method, one row per method, as `bench reconstruction` prints."""
    sets = list(dict.fromkeys(row["set"] for row in rows))
    summary = []
    for method in dict.fromkeys(row["method"] for row in rows):
        mine = [row for row in rows if row["method"] == method and not row.get("error")]
        out: Row = {"method": "autoencoder ceiling, D(E(x))" if method == "autoencoder" else method,
                    "nfe": mean(row["nfe"] for row in mine)}
        timed = [row["seconds"] for row in mine if row["seconds"] is not None]
        out["seconds"] = mean(timed) if timed else None
        for name in sets:
            of_set = [row for row in mine if row["set"] == name]
            out[name] = f"{mean(r['psnr'] for r in of_set):.2f} / {mean(r['ssim'] for r in of_set):.3f}"
        summary.append(out)
    return summary


def reconstruction_table(sets: dict[str, str]) -> list[Column]:
    return [("method", "method", ""), ("NFE", "nfe", ".0f"),
            *[(f"{label}: PSNR dB / SSIM", key, "") for key, label in sets.items()],
            ("seconds / image", "seconds", ".2f")]


def adherence(rows: list[Row]) -> list[Row]:
    (results,) = rows
    return [{"set": name, **results[name]} for name in ("adherence_heldout", "adherence_seen", "checker_on_renders")
            if name in results]


def autoencoder(rows: list[Row]) -> list[Row]:
    (results,) = rows
    return [{"images": name, "psnr": value} for name, value in results["autoencoder_psnr_db"].items()]


def probe_summary(rows: list[Row]) -> list[Row]:
    """Per probed timestep: the worst smallest-singular-value ratio and the most negative eigenvalues."""
    out, rows = [], [row for row in rows if "timestep" in row]
    for timestep in dict.fromkeys(row["timestep"] for row in rows):
        at = [row for row in rows if row["timestep"] == timestep]
        out.append({"timestep": timestep, "trajectories": len(at),
                    "min_over_floor": min(row["min_singular_over_floor"] for row in at),
                    "negative": sum(row["negative_eigenvalues"] for row in at)})
    return out


#: What the labels of earlier benchmark rows are called now: the bench's `exact` ran the paper's forward step (at
#: the row's tolerance), and its `exact-aa` preset became `method="exact"`'s defaults.
CURRENT_NAMES = {"exact": "exact-paper (tol 1e-6)", "exact-aa": "exact-aa (the default before)"}


def heun_from_first_run(rows: list[Row]) -> list[Row]:
    """The newer samplers' rows: UniPC, PNDM and DEIS from their own runs, Heun from the first run (its exact
    inversion's code did not change after it)."""
    kept, seen = [], set()
    for row in rows:
        key = (row["sampler"], row["steps"], row["guidance"], row["method"] == "naive")
        if key not in seen and (row["method"] in ("naive", "exact") or row["sampler"] == "heun"):
            seen.add(key)
            kept.append(row)
    return kept


def headline(rows: list[Row]) -> list[Row]:
    """What each method recovers, and at what cost: sampler inversion from z_0 (DDIM-50, guidance 3) and
    decoder inversion on the model's own samples (one image at a time)."""
    out = []
    for row in rows:
        if "idea" in row:  # the fewer-calls run: only the current default's row
            if row["idea"].startswith("+ one sweep") and row["sampler"] == "ddim" and row["guidance"] == 3:
                out.append({"stage": "sampler: z_0 -> z_T", "method": "exact (default)",
                            "error": f"noise NMSE {row['noise_nmse']:.1e}", "cost": f"{row['nfe']:.0f} network calls",
                            "seconds": row["seconds"], "peak_memory_bytes": row["peak_memory_bytes"]})
        elif row.get("source") == "latent" and row["sampler"] == "ddim" and row["guidance"] == 3:
            out.append({"stage": "sampler: z_0 -> z_T", "method": CURRENT_NAMES.get(row["method"], row["method"]),
                        "error": f"noise NMSE {row['noise_nmse']:.1e}", "cost": f"{row['nfe']:.0f} network calls",
                        "seconds": row["seconds"], "peak_memory_bytes": row["peak_memory_bytes"]})
        elif "latent_nmse_db" in row and row["frames"] == 1 and row["iterations"] in (0, 100):
            cost = "1 encoder call" if row["method"] == "encoder" else f"{row['iterations']} iterations"
            out.append({"stage": "decoder: x -> z_0", "method": row["method"],
                        "error": f"latent NMSE {row['latent_nmse_db']:.1f} dB", "cost": cost,
                        "seconds": row["seconds"], "peak_memory_bytes": row["peak_memory_bytes"]})
    return out


def clip_before_after(rows: list[Row]) -> list[Row]:
    """Editing from saved scenes: per decoder method, sampler and guidance, exact inversion after the decoder fit as
    before (clipped=false) and clip-aware (the default), each the mean of the colour and shape cells, per mode where
    the mode matters; with the true noise's background PSNR (a perfect inversion) beside them."""
    def average(label: str, where: tuple, field: str, mode: str | None = None, clipped: bool | None = None) -> float:
        return mean(row[field] for row in rows if row["label"] == label and mode in (None, row["mode"])
                    and (row["sampler"], row["steps"], row["guidance"]) == where[1:]
                    and (label == "true-noise" or (row["decoder"], row["decoder_config"]["clipped"]) == (where[0], clipped)))

    out = []
    for where in dict.fromkeys((row["decoder"], row["sampler"], row["steps"], row["guidance"])
                               for row in rows if row["label"] == "exact-aa"):
        out.append({"decoder": where[0], "sampler": f"{where[1]}-{where[2]}", "guidance": where[3],
                    "true": " / ".join(f"{average('true-noise', where, 'background_psnr', mode):.2f}"
                                       for mode in ("prompt-to-prompt", "diffedit"))})
        for clipped in (False, True):
            for field in ("latent_nmse_db", "noise_nmse", "reconstruction_psnr"):
                out[-1][f"{field}_{clipped}"] = average("exact-aa", where, field, clipped=clipped)
            for mode in ("prompt-to-prompt", "diffedit"):
                for field in ("background_psnr", "success"):
                    out[-1][f"{mode} {field}_{clipped}"] = average("exact-aa", where, field, mode, clipped)
    return out


def before_after(field: str, fmt: str) -> Callable[[Row], str]:
    return lambda row: f"{row[f'{field}_False']:{fmt}} -> {row[f'{field}_True']:{fmt}}"


def history(rows: list[Row]) -> list[Row]:
    (data,) = rows
    return data["items"]


FEWER_CALLS_SETTINGS = [("ddim", 1.0), ("ddim", 3.0), ("dpm++2m", 1.0), ("dpm++2m", 3.0)]


def fewer_calls(rows: list[Row]) -> list[Row]:
    """One row per idea, one cell (network calls / noise NMSE) per sampler and guidance, in the order tried."""
    ideas: dict[str, Row] = {}
    for row in rows:
        line = ideas.setdefault(row["idea"], {"idea": row["idea"]})
        line[f"{row['sampler']}@{row['guidance']:g}"] = f"{row['nfe']:.0f} / {row['noise_nmse']:.1e}"
    return list(ideas.values())


TABLES: dict[str, Table] = {
    "never-worse": Table(["tiny/never_worse_75.json"], [
        ("method", "method", ""), ("sampler", "sampler", ""), ("steps", "steps", "d"), ("noise NMSE", "noise_nmse", ".3f"),
        ("per seed 0-7", "noise_nmse_each", lambda each: " ".join(f"{value:.2f}" for value in each)), ("NFE", "nfe", ".0f"),
        ("converged", "converged", "")]),
    "fewer-calls": Table(["tiny/fewer_calls.json"], [("idea", "idea", ""), *(
        (f"{'DDIM-50' if name == 'ddim' else 'DPM++(2M)-10'} w={guidance:g}: calls / NMSE",
         f"{name}@{guidance:g}", "") for name, guidance in FEWER_CALLS_SETTINGS)], fewer_calls),
    "headline": Table(["tiny/sampler.json", "tiny/fewer_calls.json", "tiny/decoder_samples.json"], [
        ("stage", "stage", ""), ("method", "method", ""), ("what it recovers", "error", ""), ("cost", "cost", ""),
        ("seconds / image", "seconds", ".2f"), ("peak MB", "peak_memory_bytes", mb)], headline),
    "sampler": Table(["tiny/sampler.json"], SAMPLER),
    "defaults": Table(["tiny/defaults.json"], SAMPLER, lambda rows: [
        {**row, "method": "exact-aa (then the default)" if row["method"] == "exact" else row["method"]} for row in rows]),
    "samplers-new": Table(["tiny/sampler_unipc_deis.json", "tiny/sampler_pndm.json", "tiny/sampler_new.json"], SAMPLER,
                          heun_from_first_run),
    "sampler-lm": Table(["tiny/ddim_lm.json"], SAMPLER),
    "sampler-dpm-fine10": Table(["tiny/sampler_dpm_fine10.json"], SAMPLER),
    "random-sdxl": Table(["random/sdxl_sampler.json"], SAMPLER),
    "random-sd3": Table(["random/sd3_sampler.json"], SAMPLER),
    "random-flux": Table(["random/flux_sampler.json"], SAMPLER),
    "reconstruction": Table(["tiny/recon.json"], reconstruction_table(
        {"skimage": "photos", "white": "white-area images", "generated": "generated"}), reconstruction_summary),
    "reconstruction-white": Table(["tiny/recon_white.json"], reconstruction_table({"white": "white-area images"}),
                                  reconstruction_summary),
    "decoder-samples": Table(["tiny/decoder_samples.json"], DECODER),
    "wm-attacks": Table(["tiny/wm_attacks.json", "tiny/wm_attacks_gf.json"], WATERMARK, interleave),
    "wm-clean2": Table(["tiny/wm_clean2.json"], WATERMARK),
    "decoder-watermark": Table(["tiny/decoder_saved_watermark.json"], WATERMARK),
    "wm-defaults": Table(["tiny/wm_defaults.json", "tiny/wm_paper_settings.json"],
                         [("score", "score", ""), ("key radius", "radius", "")] + WATERMARK),
    "wm-clean64": Table(["tiny/wm_clean64.json", "tiny/wm_r4_clean64.json"], [
        ("score, key radius", lambda row: f"{row['score']}, {row['radius'] or row['default_radius']}", ""),
        *WATERMARK]),
    "wm-r4-attacks": Table(["tiny/wm_r4_attacks.json", "tiny/wm_r4_attacks_gf.json"], WATERMARK, interleave),
    "wm-r4-attacks32": Table(["tiny/wm_r4_attacks32.json", "tiny/wm_r4_attacks_gf32.json"], WATERMARK, interleave),
    "wm-dpm": Table(["tiny/wm_dpm.json"], WATERMARK),
    "wm-r4-dpm": Table(["tiny/wm_r4_dpm.json"], WATERMARK),
    "wm-known": Table(["tiny/watermark_known.json"], WATERMARK),
    "editing": Table(["tiny/editing.json"], EDITING),
    "editing-scenes": Table(["tiny/editing.json"], EDITING, lambda rows: [
        row for row in rows if row["images"] == "scenes" and row["method"] in ("true-noise", "naive", "exact-aa")]),
    "p2p-ablation": Table(["tiny/p2p_ablation.json"], EDITING),
    "decoder-editing": Table(["tiny/decoder_saved_editing.json"], [
        ("decoder", "decoder", ""), ("sampler", "sampler", ""), ("guidance", "guidance", "g"),
        ("latent NMSE dB", before_after("latent_nmse_db", ".2f"), ""), ("noise NMSE", before_after("noise_nmse", ".3f"), ""),
        ("rec PSNR", before_after("reconstruction_psnr", ".2f"), ""),
        ("bg PSNR, P2P", before_after("prompt-to-prompt background_psnr", ".2f"), ""),
        ("bg PSNR, DiffEdit", before_after("diffedit background_psnr", ".2f"), ""),
        ("edit ok, P2P", before_after("prompt-to-prompt success", ".2f"), ""),
        ("edit ok, DiffEdit", before_after("diffedit success", ".2f"), ""),
        ("true noise bg PSNR, P2P / DiffEdit", "true", "")], clip_before_after),
    "overhead": Table(["tiny/overhead.json"], [
        ("steps", "steps", "d"), ("guidance", "guidance", "g"), ("batch", "batch", "d"),
        ("diffinv seconds", "diffinv_seconds", ".4f"), ("diffusers seconds", "diffusers_seconds", ".4f"),
        ("ratio", "ratio", ".3f"), ("noise NMSE between them", "noise_nmse_between", ".2e")]),
    "adherence": Table(["tiny/eval.json"], [
        ("prompts", "set", ""), ("samples", "samples", "d"), ("background", "background", percent),
        ("shape colour", "shape_color", percent), ("both colours", "colors", percent),
        ("shape kind", "shape", percent), ("all", "all", percent)], adherence),
    "autoencoder": Table(["tiny/eval.json"], [("images", "images", ""), ("D(E(x)) PSNR dB", "psnr", ".2f")],
                         autoencoder),
    "probe": Table(["tiny/probe.json"], [
        ("t", "timestep", ".0f"), ("trajectories", "trajectories", "d"),
        ("smallest min sv / floor", "min_over_floor", ".3f"), ("negative eigenvalues", "negative", "d")],
        probe_summary),
    "probe-inversion": Table(["tiny/probe.json"], [
        ("prompt", "prompt", ""), ("seed", "seed", "d"), ("method", "method", ""), ("noise NMSE", "noise_nmse", ".2e"),
        ("converged", "converged", "")], lambda rows: [row for row in rows if "method" in row]),
    "probe-dpm75-first": Table(["tiny/probe_dpm75_first.json"], [
        *PROBE, ("solve residual", "solved_residual", ".1e"), ("solve NMSE", "solved_nmse", ".2e")]),
    "history": Table(["bundled-history.json"], [
        ("item", "item", ""), ("target", "target", ""), ("models/tiny-v2", "v2", ""), ("fourth version", "v4", ""),
        ("fifth version", "v5", ""), ("tiny (shipped)", "tiny", ""), ("met", "met", "")], history),
}

if __name__ == "__main__":
    sys.exit(main())
