"""MkDocs hooks: the CLI reference page, generated from the Typer app at build time."""

from __future__ import annotations

import subprocess
import sys

from mkdocs.structure.files import File, Files

CLI_PAGE = "reference/cli.md"


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
