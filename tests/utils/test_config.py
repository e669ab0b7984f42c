"""Typed method configurations: fields are options, checked once, read from text by their type, written to a
report and read back unchanged."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, dataclass

import pytest

from diffinv.utils.config import Config, Registry, bounded


@dataclass(frozen=True, kw_only=True)
class Toy(Config):
    name = "toy"
    kind = "toy method"
    steps: int = bounded(10, min=1)
    rate: float = bounded(0.5, above=0.0, below=1.0)
    stop: float | None = bounded(None, min=0.0)
    rule: str = bounded("fast", choices=("fast", "slow"))
    window: tuple[int, ...] = bounded((0, 5), min=0)
    verbose: bool = False


TOYS = Registry("toy method", [Toy])
TOYS.preset("toy-slow", Toy(rule="slow", steps=20))


def test_text_is_read_by_the_field_type():
    toy = Toy.from_options({"steps": "12", "rate": "0.25", "stop": "none", "window": "[1, 2]", "verbose": "true"})
    assert (toy.steps, toy.rate, toy.stop, toy.window, toy.verbose) == (12, 0.25, None, (1, 2), True)
    assert isinstance(Toy(rate=1e-1 * 5).rate, float) and Toy(steps=3.0).steps == 3


@pytest.mark.parametrize(("options", "message"), [
    ({"steps": 0}, r"option steps of toy method 'toy' must be >= 1, got 0"),
    ({"rate": 1.0}, r"option rate of toy method 'toy' must be in \(0, 1\), got 1.0"),
    ({"rate": "fast"}, r"option rate of toy method 'toy' must be a finite number, got 'fast'"),
    ({"rate": float("nan")}, r"option rate of toy method 'toy' must be a finite number"),
    ({"steps": 2.5}, r"option steps of toy method 'toy' must be a whole number"),
    ({"verbose": 1}, r"option verbose of toy method 'toy' must be true or false"),
    ({"rule": "medium"}, r"option rule of toy method 'toy' must be one of fast, slow"),
    ({"window": [0, -1]}, r"option window of toy method 'toy' must be >= 0"),
    ({"speed": 1}, r"unknown option\(s\) speed for toy method 'toy'; accepted: steps, rate, stop, rule, window, verbose"),
])
def test_every_option_error_names_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        Toy.from_options(options)


def test_instances_are_immutable_and_replace_checks():
    toy = Toy()
    with pytest.raises(FrozenInstanceError):
        toy.steps = 3
    with pytest.raises(ValueError, match="must be >= 1"):
        toy.replace(steps=-1)
    assert toy.replace(steps=3).steps == 3 and toy.steps == 10


def test_registry_resolves_names_labels_presets_and_instances():
    assert TOYS.resolve("toy") == Toy()
    assert TOYS.resolve("toy:steps=3,window=[2, 4]") == Toy(steps=3, window=(2, 4))
    assert TOYS.resolve("toy-slow", {"steps": 5}) == Toy(rule="slow", steps=5)
    assert TOYS.resolve(Toy(steps=4), {"rate": 0.1}) == Toy(steps=4, rate=0.1)
    with pytest.raises(ValueError, match="unknown toy method 'tiy'; choose one of toy, toy-slow"):
        TOYS.resolve("tiy")
    assert Toy(steps=3).label() == "toy:steps=3" and Toy().label() == "toy"


def test_a_configuration_survives_its_report():
    toy = Toy(steps=7, stop=1e-6, window=(3, 9), verbose=True)
    written = json.loads(json.dumps(toy.as_dict()))
    assert written["name"] == "toy" and written["window"] == [3, 9]
    assert TOYS.from_dict(written) == toy
