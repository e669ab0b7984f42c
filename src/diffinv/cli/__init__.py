"""Surfaces: the `diffinv` command line (Typer). `common` holds the apps and shared helpers; `commands`,
`edit`, `watermark` and `bench` register their subcommands on import. May import every layer below."""

from __future__ import annotations

import os

from diffinv.cli import bench, commands, edit, watermark  # noqa: F401  (registers the subcommands)
from diffinv.cli.common import app


def quiet_libraries() -> None:
    """Keep the terminal for diffinv's own progress bars and report: no loader chatter from the libraries."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import diffusers.utils.logging
    import transformers.utils.logging

    for library in (diffusers.utils.logging, transformers.utils.logging):
        library.set_verbosity_error()
        library.disable_progress_bar()


def main() -> None:
    """Console entry point."""
    quiet_libraries()
    app(prog_name="diffinv")
