"""What `pip install` puts on a user's machine: the library, its CLI, its benchmarks and the bundled model,
not the code that trains the bundled model."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_no_training_code(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=600)
    wheel, = tmp_path.glob("diffinv-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "diffinv/cli/__init__.py" in names and "diffinv/bench/probe.py" in names
    assert any(name.startswith("diffinv/weights/tiny/") for name in names)
    assert not [name for name in names if "diffinv_train" in name or name.startswith("diffinv/train/")]
