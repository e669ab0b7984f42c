"""The documentation: every measured table agrees with its JSON, and the site builds with --strict."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RENDER = ROOT / "scripts" / "render_tables.py"


def render_tables(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RENDER), *args], capture_output=True, text=True, cwd=ROOT)


def load_renderer():
    spec = importlib.util.spec_from_file_location("render_tables", RENDER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_table_agrees_with_its_json():
    result = render_tables("--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every page agrees with its JSON" in result.stdout


def test_a_number_changed_by_hand_fails_the_check(tmp_path):
    page = tmp_path / "sampler-inversion.md"
    text = (ROOT / "docs" / "sampler-inversion.md").read_text()
    row = re.search(r"^\| naive \| ddim \| 50 \| 1 \| (\d\.\d\de-\d\d) \|", text, re.M)
    assert row, "the sampler table's first row"
    page.write_text(text.replace(row.group(0), row.group(0).replace(row.group(1), "1.00e-09"), 1))
    result = render_tables("--check", str(page))
    assert result.returncode == 1
    assert "1.00e-09" in result.stdout and "disagree" in result.stdout
    assert render_tables("--write", str(page)).returncode == 0  # rendering again restores the JSON's number
    assert page.read_text() == text
    assert render_tables("--check", str(page)).returncode == 0


def test_an_unknown_table_name_is_an_error(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- table: no-such-table -->\n<!-- /table -->\n")
    result = render_tables("--check", str(page))
    assert result.returncode != 0 and "no-such-table" in result.stdout + result.stderr


def test_every_defined_table_is_on_a_page():
    renderer = load_renderer()
    used = {match["name"] for page in renderer.pages() for match in renderer.BLOCK.finditer(page.read_text())}
    assert set(renderer.TABLES) <= used, sorted(set(renderer.TABLES) - used)


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


HISTORY = re.compile(r"#\d|\bissue\b|\b(first|second|third|fourth|fifth|sixth) version|tiny-v\d|\b20\d\d-\d\d-\d\d\b", re.I)


def test_readme_tells_no_history():
    assert not HISTORY.findall((ROOT / "README.md").read_text())


def test_pages_do_not_open_with_a_model_version():
    for page in sorted((ROOT / "docs").glob("*.md")):
        opening = page.read_text().split("\n\n", 2)[:2]
        assert not HISTORY.search("\n".join(opening)), page.name


def test_the_site_builds_strict(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e .[docs])")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "diffinv invert" in (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    import diffinv

    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    missing = [name for name, module in diffinv._EXPORTS.items() if f'id="{module}.{name}"' not in api]
    assert not missing, f"public names without an API entry: {missing}"
    assert "exact-paper" in (tmp_path / "site" / "sampler-inversion" / "index.html").read_text()  # options generated
