"""Typed, immutable method configurations: a method's options are its fields, defaults written once, checked once.

Every method a user picks (a sampler-inversion method, a decoder-inversion method, an editing mode) is a
frozen dataclass deriving from `Config`. Its fields are its options; `__post_init__` checks each value
against the field's type and the bounds in its metadata (`bounded(min=..., max=..., choices=...)`) and
names the field in a one-line ValueError. The same class turns text (the CLI's `--method-option KEY=VALUE`,
a bench label `exact:tol=1e-6`) into typed values by the field's annotation, and writes itself to a report
and back (`as_dict` / `Registry.from_dict`), so a run can be repeated from its report.

A `Registry` maps the names users type to the classes of one stage, and resolves what a user gives (a
name, a name with options, or an instance) into one instance: the single place where options are checked.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Generic, Literal, TypeVar

from diffinv.utils.specs import parse_spec, parse_value


def bounded(default: Any, *, min: float | None = None, max: float | None = None, above: float | None = None,
            below: float | None = None, choices: Iterable[Any] | None = None, help: str = "") -> Any:
    """A config field with its default and the bounds its values must keep (min <= v <= max, above < v < below,
    v in choices); `help` is the one-line description the CLI and the docs show."""
    metadata = {"min": min, "max": max, "above": above, "below": below,
                "choices": tuple(choices) if choices is not None else None, "help": help}
    if isinstance(default, (list, dict, set)):
        raise TypeError("config defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata=metadata)


_C = TypeVar("_C", bound="Config")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Base of every method configuration: fields are options, checked on construction."""

    #: The name users type for this method (`Registry` keys), set by each subclass.
    name: ClassVar[str] = ""
    #: What kind of method it is, for messages ("inversion method", "decoder method", "editing mode").
    kind: ClassVar[str] = "method"

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        owner = f"{self.kind} {self.name!r}"
        for spec in dataclasses.fields(self):
            value = _coerce(owner, spec.name, hints[spec.name], getattr(self, spec.name))
            _check_bounds(owner, spec, value)
            object.__setattr__(self, spec.name, value)
        self.check()

    def check(self) -> None:
        """Checks that involve several fields (a subclass's); raise ValueError naming them."""

    def replace(self: _C, **changes: Any) -> _C:
        """A copy with some options changed, checked like a new instance."""
        unknown = sorted(set(changes) - {spec.name for spec in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for {self.kind} {self.name!r}; "
                             f"accepted: {', '.join(self.option_names())}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def option_names(cls) -> list[str]:
        return [spec.name for spec in dataclasses.fields(cls)]

    @classmethod
    def from_options(cls: type[_C], options: Mapping[str, Any] | None = None) -> _C:
        """An instance from {option: value}; text values (from the command line) are read by the field's type."""
        options = {key.replace("-", "_"): value for key, value in (options or {}).items()}
        unknown = sorted(set(options) - set(cls.option_names()))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for {cls.kind} {cls.name!r}; "
                             f"accepted: {', '.join(cls.option_names())}")
        return cls(**options)

    def as_dict(self) -> dict[str, Any]:
        """{"name": ..., option: value, ...}: JSON-ready, and `Registry.from_dict` rebuilds the same instance."""
        return {"name": self.name, **{spec.name: _plain(getattr(self, spec.name)) for spec in dataclasses.fields(self)}}

    def changed(self) -> dict[str, Any]:
        """The options that differ from the class defaults (how a label names this instance)."""
        default = type(self)()
        return {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self)
                if getattr(self, spec.name) != getattr(default, spec.name)}

    def label(self) -> str:
        """'name' or 'name:key=value,...' for the options that differ from the defaults."""
        changed = self.changed()
        return self.name + (":" + ",".join(f"{k}={_plain(v)}" for k, v in changed.items()) if changed else "")


class Registry(Generic[_C]):
    """The configurations of one stage by the names users type, and presets (named instances)."""

    def __init__(self, stage: str, classes: Iterable[type[_C]] = ()) -> None:
        self.stage = stage
        self.classes: dict[str, type[_C]] = {}
        self.presets: dict[str, _C] = {}
        for cls in classes:
            self.register(cls)

    def register(self, cls: type[_C]) -> type[_C]:
        """Add a configuration class under its `name` (usable as a class decorator)."""
        if not cls.name or cls.name in self.classes:
            raise ValueError(f"{self.stage}: a method needs a new name, got {cls.name!r}")
        self.classes[cls.name] = cls
        return cls

    def preset(self, label: str, config: _C) -> _C:
        """Name an instance (the paper's settings, a benchmark's variant)."""
        self.presets[label] = config
        return config

    def names(self) -> list[str]:
        """The methods' names (presets not included)."""
        return list(self.classes)

    def __iter__(self):
        return iter(self.classes)

    def __contains__(self, name: object) -> bool:
        return name in self.classes or name in self.presets

    def check_name(self, name: str) -> str:
        if name not in self.classes and name not in self.presets:
            raise ValueError(f"unknown {self.stage} {name!r}; choose one of {', '.join([*self.classes, *self.presets])}")
        return name

    def resolve(self, method: str | _C, options: Mapping[str, Any] | None = None) -> _C:
        """One instance from a name ('exact', a preset, or 'exact:tol=1e-6'), or an instance, with `options`
        overriding; every value checked by its field."""
        if isinstance(method, Config):
            if not isinstance(method, tuple(self.classes.values())):
                raise ValueError(f"{method.name!r} is not a {self.stage}; choose one of {', '.join(self.classes)}")
            return method.replace(**dict(options or {})) if options else method
        if not isinstance(method, str):
            raise ValueError(f"a {self.stage} is a name or a configuration, got {type(method).__name__}")
        name, inline = parse_spec(method)
        self.check_name(name)
        merged = {**inline, **dict(options or {})}
        if name in self.presets:
            return self.presets[name].replace(**merged) if merged else self.presets[name]
        return self.classes[name].from_options(merged)

    def from_dict(self, data: Mapping[str, Any]) -> _C:
        """The instance a report's `as_dict` describes."""
        data = dict(data)
        name = data.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"a {self.stage} configuration needs its 'name'")
        self.check_name(name)
        return self.classes[name].from_options(data)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _coerce(owner: str, field: str, hint: Any, value: Any) -> Any:
    """`value` as the field's type: text read as the type says, ints taken for floats, lists for tuples."""
    where = f"option {field} of {owner}"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, str) and str not in args:
            value = parse_value(value)
        if value is None and type(None) in args:
            return None
        kinds = [arg for arg in args if arg is not type(None)]
        errors = []
        for kind in kinds:
            try:
                return _coerce(owner, field, kind, value)
            except ValueError as error:
                errors.append(error)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if isinstance(value, str) and hint is not str:
        value = parse_value(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ValueError(f"{where} must be a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a word, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list of numbers like [0, 5], got {value!r}")
        kind = args[0] if args else Any
        return tuple(_coerce(owner, field, kind, item) for item in value) if kind is not Any else tuple(value)
    return value


def _interval(meta: Mapping[str, Any]) -> str:
    """'[0, 1]', '(0, 1)', '>= 1', '> 0': the range a field's bounds allow."""
    low = ("[", meta["min"]) if meta.get("min") is not None else ("(", meta["above"]) if meta.get("above") is not None else None
    high = (meta["max"], "]") if meta.get("max") is not None else (meta["below"], ")") if meta.get("below") is not None else None
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[0]:g}{high[1]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
    return f"{'<=' if high[1] == ']' else '<'} {high[0]:g}"


def _check_bounds(owner: str, spec: dataclasses.Field, value: Any) -> None:
    if value is None:
        return
    meta = spec.metadata
    where = f"option {spec.name} of {owner}"
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ValueError(f"{where} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
    numbers = value if isinstance(value, tuple) else (value,)
    for number in numbers:
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            continue
        inside = ((meta.get("min") is None or number >= meta["min"]) and (meta.get("max") is None or number <= meta["max"])
                  and (meta.get("above") is None or number > meta["above"])
                  and (meta.get("below") is None or number < meta["below"]))
        if not inside:
            raise ValueError(f"{where} must be {_interval(meta)}, got {value!r}")
