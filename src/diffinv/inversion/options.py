"""Method factories that check their options by name, so a misspelt option is a ValueError, not a silent default."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from diffinv.utils.specs import check_option_types

#: A value of each plain annotation, so an option with no default still has a kind to check against.
_EXAMPLES = {"float": 0.0, "int": 0, "bool": False, "str": ""}


def _example(parameter: inspect.Parameter) -> Any:
    """A value of the one plain type the parameter's annotation allows (`float | None` -> 0.0), or None
    (no check) for anything else, such as a union of an int and a pair."""
    annotation = parameter.annotation if isinstance(parameter.annotation, str) else getattr(parameter.annotation, "__name__", "")
    kinds = [part.strip() for part in annotation.split("|") if part.strip() != "None"]
    return _EXAMPLES.get(kinds[0]) if len(kinds) == 1 else None


def checked_factory(name: str, build: Callable[..., Any]) -> Callable[..., Any]:
    """`build(**options)`, refusing options that `build` does not take with a ValueError naming the valid ones."""
    parameters = [
        parameter
        for parameter in inspect.signature(build).parameters.values()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    ]
    accepted = [parameter.name for parameter in parameters]
    defaults = {p.name: _example(p) for p in parameters}

    def factory(**options: Any) -> Any:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            takes = ", ".join(accepted) or "no options"
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for inversion method {name!r}; it takes {takes}")
        check_option_types(f"inversion method {name!r}", defaults, options)
        return build(**options)

    factory.__doc__ = f"Build the {name!r} step solver; options: {', '.join(accepted) or 'none'}."
    return factory
