"""MkDocs hooks: the CLI reference page, generated from the Typer app, and the methods' option tables, generated
from their configuration classes, at build time."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import subprocess
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

CLI_PAGE = "reference/cli.md"
API_PAGE = "reference/api.md"
#: The order of the API reference's sections; a module not named here comes after them.
API_ORDER = ["diffinv.models.loading", "diffinv.pipeline", "diffinv.inversion", "diffinv.decoder",
             "diffinv.applications.editing", "diffinv.models.denoiser", "diffinv.models.autoencoder",
             "diffinv.sampler.sampling", "diffinv.sampler.schedule", "diffinv.utils.metrics"]


def exports(src: Path) -> dict[str, str]:
    """`diffinv._EXPORTS` as the source tree being built has it (read, not imported: mkdocstrings reads the same files)."""
    tree = ast.parse((src / "diffinv" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "_EXPORTS" for target in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError("src/diffinv/__init__.py has no _EXPORTS")


def api_reference(src: Path) -> str:
    """One mkdocstrings block per public name of `diffinv` (its `_EXPORTS`), grouped by the module it comes from."""
    modules: dict[str, list[str]] = {}
    for name, module in exports(src).items():
        modules.setdefault(module, []).append(name)
    order = sorted(modules, key=lambda module: API_ORDER.index(module) if module in API_ORDER else len(API_ORDER))
    parts = ["# Python API\n\nEvery public name of `diffinv` (`diffinv.load`, `diffinv.invert`, ...), from its docstring; "
             "generated when the site is built.\n"]
    for module in order:
        path = src / (module.replace(".", "/") + ".py")
        path = path if path.exists() else src / module.replace(".", "/") / "__init__.py"
        doc = (ast.get_docstring(ast.parse(path.read_text())) or "").split("\n\n")[0]
        parts.append(f"## `{module}`\n\n{' '.join(doc.split())}\n")
        parts += [f"::: {module}.{name}\n" for name in modules[module]]
    return "\n".join(parts)


def cli_reference() -> str:
    """Typer's own markdown for the `diffinv` command tree."""
    markdown = subprocess.run([sys.executable, "-m", "typer", "diffinv.cli", "utils", "docs", "--name", "diffinv"],
                              check=True, capture_output=True, text=True).stdout
    intro = ("Generated from the Typer app (`diffinv.cli.app`) when the site is built, with "
             "`python -m typer diffinv.cli utils docs --name diffinv`.\n\n")
    title, _, rest = markdown.partition("\n")
    return f"# Command line\n\n{intro}{rest.replace(chr(10) + '#', chr(10) + '##')}"


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, CLI_PAGE, content=cli_reference()))
    files.append(File.generated(config, API_PAGE, content=api_reference(Path(config["config_file_path"]).parent / "src")))
    return files


#: Pages other work adds; the nav names them, and leaves them out until they exist.
OPTIONAL_PAGES = {"full-size.md"}


def _present(entry, docs_dir: str) -> bool:
    import os

    target = next(iter(entry.values())) if isinstance(entry, dict) else entry
    return not (isinstance(target, str) and target in OPTIONAL_PAGES
                and not os.path.exists(os.path.join(docs_dir, target)))


def on_config(config):
    config["nav"] = [entry for entry in config["nav"] if _present(entry, config["docs_dir"])]
    return config


OPTIONS = re.compile(r"<!-- options: ([\w.]+) -->")


def _bounds(meta) -> str:
    if meta.get("choices"):
        return ", ".join(f"`{choice}`" for choice in meta["choices"])
    parts = [f"{sign} {meta[key]}" for key, sign in (("min", ">="), ("above", ">"), ("max", "<="), ("below", "<"))
             if meta.get(key) is not None]
    return ", ".join(parts)


def options_markdown(path: str) -> str:
    """A registry's methods, each with a table of its options (name, default, bounds, meaning), and its presets:
    read from the configuration classes, so the page cannot drift from the code."""
    module, _, attribute = path.rpartition(".")
    registry = getattr(importlib.import_module(module), attribute)
    blocks = []
    for name, cls in registry.classes.items():
        doc = " ".join((cls.__doc__ or "").split())
        rows = ["| option | default | allowed | meaning |", "|---|---|---|---|"]
        for field in dataclasses.fields(cls):
            meta = field.metadata
            rows.append(f"| `{field.name}` | `{field.default!r}` | {_bounds(meta)} | {meta.get('help', '')} |")
        table = "\n".join(rows) if len(rows) > 2 else "No options."
        blocks.append(f"**`{name}`**: {doc}\n\n{table}")
    if registry.presets:
        presets = "\n".join(f"- `{label}` = `{config.label()}`" for label, config in registry.presets.items())
        blocks.append(f"Presets (names that stand for a configured method):\n\n{presets}")
    return "\n\n".join(blocks)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return OPTIONS.sub(lambda match: options_markdown(match[1]), markdown)
