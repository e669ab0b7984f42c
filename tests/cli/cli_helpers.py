"""The two ways the command-line tests run `diffinv`: in process (Typer's runner) and as the installed command."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from diffinv.cli import app

runner = CliRunner()


def run(*args):
    """`diffinv ARGS` in this process, every argument as text."""
    return runner.invoke(app, [str(arg) for arg in args])


def entry_point(*args, timeout=120):
    """The installed `diffinv` command as a user runs it (its own error formatting, its own start-up)."""
    return subprocess.run([sys.executable, "-m", "diffinv.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
