"""Text tables and JSON for benchmark rows: every benchmark prints and writes rows the same way."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffinv.utils.outputs import write_json

#: (row key, header, format spec) of one table column.
Column = tuple[str, str, str]


def _cell(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and spec:
        return format(value, spec)
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], title: str | None = None) -> str:
    """Rows as an aligned text table with the given columns (missing values print as '-')."""
    header = [name for _, name, _ in columns]
    body = [[_cell(row.get(key), spec) for key, _, spec in columns] for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(columns))]
    lines = [title] if title else []
    lines.append("  ".join(text.ljust(width) for text, width in zip(header, widths)).rstrip())
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(text.rjust(width) if i else text.ljust(width) for i, (text, width) in enumerate(zip(line, widths))).rstrip() for line in body]
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def write_rows(path: str | Path, rows: Sequence[dict[str, Any]], **extra: Any) -> Path:
    """Write `{"rows": [...], **extra}` as JSON (non-finite floats become null / "inf")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"rows": [{key: _json_safe(value) for key, value in row.items()} for row in rows], **extra})
    return path
