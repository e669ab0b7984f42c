"""Method factories that check their options by name, so a misspelt option is a ValueError, not a silent default."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def checked_factory(name: str, build: Callable[..., Any]) -> Callable[..., Any]:
    """`build(**options)`, refusing options that `build` does not take with a ValueError naming the valid ones."""
    accepted = [
        parameter.name
        for parameter in inspect.signature(build).parameters.values()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    ]

    def factory(**options: Any) -> Any:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            takes = ", ".join(accepted) or "no options"
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for inversion method {name!r}; it takes {takes}")
        return build(**options)

    factory.__doc__ = f"Build the {name!r} step solver; options: {', '.join(accepted) or 'none'}."
    return factory
