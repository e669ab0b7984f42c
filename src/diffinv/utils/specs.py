"""Method specs as users type them: "name:key=value,key=value" and KEY=VALUE options.

One parser for the CLI's --method-option / --decoder-option and every benchmark's method lists.
Values read as JSON when they parse (numbers, true/false, null, [lists]), else as text; "True",
"False" and "None" are accepted too. Option keys may use dashes for underscores.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

#: The seeds torch's random generator takes (what every `seed` argument and `--seed` option accepts).
SEED_RANGE = (-(2**63), 2**64 - 1)

#: A comma that is not inside [...] (so list values keep their commas).
_TOP_LEVEL_COMMA = re.compile(r",(?![^\[]*\])")


def parse_value(text: str) -> Any:
    """'3' -> 3, '1e-3' -> 0.001, 'true' -> True, 'none' -> None, '[0, 5]' -> [0, 5], 'gd' -> 'gd'."""
    text = text.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_options(items: Iterable[str] | None, context: str = "") -> dict[str, Any]:
    """KEY=VALUE strings -> {key: value}; a malformed item is a ValueError."""
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"option {item!r}{context} is not KEY=VALUE")
        options[key.strip().replace("-", "_")] = parse_value(value)
    return options


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'name' or 'name:key=value,key=value' -> (name, options). Names are not checked here."""
    name, _, rest = spec.partition(":")
    items = [part.strip() for part in _TOP_LEVEL_COMMA.split(rest) if part.strip()]
    return name.strip(), parse_options(items, context=f" in {spec!r}")


def split_specs(text: str) -> list[str]:
    """'naive,easyinv:eta=0.8,order=code,renoise' -> ['naive', 'easyinv:eta=0.8,order=code', 'renoise']:
    a comma starts a new spec unless what follows is another key=value of the current one."""
    specs: list[str] = []
    for piece in (part.strip() for part in _TOP_LEVEL_COMMA.split(text)):
        if not piece:
            continue
        head = piece.partition("=")[0]
        if specs and "=" in piece and ":" not in head:
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    return specs


def _kind(default: Any) -> tuple[str, Callable[[Any], bool]] | None:
    """What an option whose default is `default` must be, and a test for it (None: anything goes)."""
    if isinstance(default, bool):
        return "true or false", lambda v: isinstance(v, bool)
    if isinstance(default, int):
        return "a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)
    if isinstance(default, float):
        return "a finite number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if isinstance(default, str):
        return "a word", lambda v: isinstance(v, str)
    return None


def check_option_types(owner: str, defaults: dict[str, Any], options: dict[str, Any]) -> None:
    """Refuse an option whose value is not of its default's kind, naming the option (``max_iter=abc``)."""
    for name, value in options.items():
        kind = _kind(defaults.get(name))
        if kind is not None and value is not None and not kind[1](value):
            raise ValueError(f"option {name} of {owner} must be {kind[0]}, got {value!r}")
