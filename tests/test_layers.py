"""The package's layers, read from its own import statements: every import goes down the layers.

utils < models < sampler < inversion < decoder < pipeline (end to end) < applications < surfaces:
bench < cli. A module may import its own subpackage and any lower layer, never a higher one. The bundled
model's training code (`diffinv_train/`, beside the package) is not part of the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "diffinv"
LAYERS = {"utils": 0, "models": 1, "sampler": 2, "inversion": 3, "decoder": 4, "pipeline": 5, "applications": 6,
          "bench": 8, "cli": 9}


def part_of(module: str) -> str:
    """'diffinv.sampler.schedule' -> 'sampler'; 'diffinv.cli' -> 'cli'."""
    return module.split(".")[1]


def imported_modules(path: Path) -> set[str]:
    """Every diffinv module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("diffinv."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("diffinv.")}
    return found


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        if name != "diffinv":  # the package root only maps names to modules, lazily
            found.append((name, path))
    return found


def test_every_module_belongs_to_a_layer():
    unplaced = sorted({part_of(name) for name, _ in modules()} - set(LAYERS))
    assert not unplaced, f"modules outside every layer: {unplaced}"


@pytest.mark.parametrize("name,path", modules(), ids=[name for name, _ in modules()])
def test_imports_go_down_the_layers(name, path):
    own = part_of(name)
    for target in imported_modules(path):
        other = part_of(target)
        assert other == own or LAYERS[other] < LAYERS[own], f"{name} imports {target}: {other} is not below {own}"


def test_no_module_is_over_400_lines():
    long = {name: n for name, path in modules() if (n := len(path.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def test_public_names_are_visible_to_type_checkers():
    """`diffinv/__init__.py` imports its public names lazily; its TYPE_CHECKING block names the same ones."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    exports = next(ast.literal_eval(node.value) for node in tree.body
                   if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "_EXPORTS")
    checking = next(node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING")
    imported = {alias.name: statement.module for statement in checking.body for alias in statement.names}
    assert imported == exports
