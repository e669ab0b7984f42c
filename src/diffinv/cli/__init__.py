"""Surfaces: the `diffinv` command line (Typer). `common` holds the apps and shared helpers; `commands`,
`edit`, `watermark`, `probe` and `bench` register their subcommands on import. May import every layer below.

The command modules import torch, diffusers and the rest of diffinv inside each command, so that
`diffinv --help`, `--version` and argument errors answer without loading them.
"""

from __future__ import annotations

import os
import sys
import warnings

from diffinv.cli import bench, commands, edit, probe, watermark  # noqa: F401  (registers the subcommands)
from diffinv.cli.common import app

#: What the entry point sets before any library is imported: no loader chatter on the terminal.
QUIET_ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def quiet_environment() -> None:
    """Set the environment variables the libraries read on import (unless the user set them)."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def quiet_libraries() -> None:
    """Keep the terminal for diffinv's own progress bars and report: no loader chatter from the libraries
    (the environment variables they read on import, and their loggers if already imported)."""
    quiet_environment()
    from diffinv.models.loading import silence_libraries

    silence_libraries()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings from the library reach the terminal as one line, `warning: ...`, without source lines."""
    print(f"warning: {message}", file=sys.stderr)


def main() -> None:
    """Console entry point: argument errors print one line, `error: ...`, and exit with status 2, like every
    other error a user can cause."""
    import typer
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    quiet_environment()
    warnings.showwarning = _one_line_warning
    try:
        code = app(prog_name="diffinv", standalone_mode=False)
    except NoArgsIsHelpError as error:  # a bare `diffinv` or group: its help, as Typer shows it
        typer.echo(error.ctx.get_help())
        sys.exit(0)
    except ClickException as error:
        where = f" (see {error.ctx.command_path} --help)" if getattr(error, "ctx", None) is not None else ""
        typer.echo(f"error: {error.format_message()}{where}", err=True)
        sys.exit(error.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
