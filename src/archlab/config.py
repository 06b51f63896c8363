"""Recipes: YAML with four sections, ``task``, ``data``, ``model`` and ``trainer``.

Each section is resolved into a dataclass, so every key is checked and every
value typed: ``task`` and ``data`` by the task named in ``task.name``, ``model``
by the config of the model named in ``model.name``, ``trainer`` by
:class:`archlab.train.TrainerConfig`.  ``--set a.b=value`` overrides one key; an
unknown key fails with the valid keys nearest to it, a value of the wrong type
names the key and the type it expects.  The fully resolved recipe (every field,
defaults included) is what a run directory's ``config.yaml`` holds.

Every config dataclass derives from :class:`Config`, and each of its fields declares
the values it may take in its annotation: ``n_head: Size`` (an integer of at least 1),
``dropout: Probability`` (in [0, 1)), ``lr: PositiveFloat`` (finite and above 0),
``readout: Annotated[str, OneOf(READOUTS)] | None``.  They are checked whenever the
config is built -- from a recipe, by ``create_model``, or directly -- and so are the
rules that tie fields together (``n_embd`` divisible by ``n_head``), which a config
adds in its ``__post_init__``.  A bad value is a :class:`ConfigError` of one sentence
that names the key as the user wrote it: ``model.n_head must be at least 1, got 0``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml

from archlab.errors import ConfigError

SECTIONS = ("task", "data", "model", "trainer")
RECIPE_DIR = Path(__file__).parent / "recipes"


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def read_recipe(name_or_path: str) -> dict[str, Any]:
    """A shipped recipe by name, or a YAML file by path, as a plain dict."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = RECIPE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            close = difflib.get_close_matches(name_or_path, list_recipes(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"unknown recipe {name_or_path!r}{hint} (see `archlab list recipes`, or give a "
                f"path to a YAML file)"
            )
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read recipe {str(path)!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(recipe, dict):
        raise ConfigError(f"recipe {str(path)!r} must be a mapping with sections {SECTIONS}")
    unknown = set(recipe) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"recipe {str(path)!r} has unknown sections {sorted(unknown)}")
    return {section: dict(recipe.get(section) or {}) for section in SECTIONS}


def parse_override(text: str) -> tuple[str, str, str]:
    """``"trainer.max_steps=400"`` -> ("trainer", "max_steps", "400")."""
    key, sep, value = text.partition("=")
    section, dot, field = key.strip().partition(".")
    if not sep or not dot or not field:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    if section not in SECTIONS:
        raise ConfigError(f"--set {text!r}: the section must be one of {', '.join(SECTIONS)}")
    return section, field, value


def apply_overrides(recipe: dict[str, dict], overrides: list[str]) -> dict[str, dict]:
    """Set each override's raw string; typing and validation happen in :func:`to_dataclass`."""
    recipe = {section: dict(values) for section, values in recipe.items()}
    for text in overrides:
        section, field, value = parse_override(text)
        recipe[section][field] = _RawValue(value)
    return recipe


class _RawValue(str):
    """A value typed on the command line, converted to its field's type later."""


def is_override(value: Any) -> bool:
    """Whether ``value`` was given with ``--set`` (rather than read from a file)."""
    return isinstance(value, _RawValue)


def prefer_overrides(values: dict[str, Any], pairs: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Of two keys that say one thing two ways (``eval_every``, ``eval_every_epochs``), the one
    given with ``--set`` replaces the other from the recipe."""
    values = dict(values)
    for a, b in pairs:
        for given, other in ((a, b), (b, a)):
            if isinstance(values.get(given), _RawValue) and not isinstance(
                values.get(other), _RawValue
            ):
                values.pop(other, None)
    return values


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` to type ``tp`` (bool, int, float, str, their Optional, list)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        is_null = value is None or (
            isinstance(value, _RawValue) and value.lower() in ("null", "none")
        )
        if is_null and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, _RawValue):
            value = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
        if not isinstance(value, list):
            raise ConfigError(f"{key} expects a list, got {value!r}")
        return [coerce(_RawValue(v) if isinstance(v, str) else v, item, key) for v in value]
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if isinstance(value, _RawValue):  # --set trainer.lr_scales={discriminator: 4}
            try:
                value = yaml.safe_load(value) if value.strip() else {}
            except yaml.YAMLError:
                value = None
        if not isinstance(value, dict):
            raise ConfigError(f"{key} expects a mapping such as {{name: value}}, got {value!r}")
        return {
            coerce(_RawValue(k), key_type, key): coerce(
                _RawValue(v) if isinstance(v, str) else v, value_type, f"{key}.{k}"
            )
            for k, v in value.items()
        }
    raw = isinstance(value, _RawValue)
    try:
        if tp is bool:
            if raw and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
                return value.lower() in ("true", "yes", "1", "on")
            if isinstance(value, bool):
                return value
        elif tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if (raw or isinstance(value, float)) and float(value).is_integer():
                return int(float(value))  # "400", "4e2" and 400.0 all mean 400
        elif tp is float:
            if isinstance(value, int | float | str) and not isinstance(value, bool):
                return float(value)
        elif tp is str:
            if isinstance(value, str):
                return str(value)
        else:
            return value
    except ValueError:
        pass
    raise ConfigError(f"{key} expects {_type_name(tp)}, got {str(value)!r}")


# ----- the values a field may take -----


class Rule:
    """What a field's values must be; declared in its annotation, ``Annotated[int, AtLeast(1)]``."""

    def problem(self, value: Any) -> str | None:
        """What ``value`` must be, as words after "must" ("be at least 1"), or None if it is."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class AtLeast(Rule):
    low: int

    def problem(self, value: Any) -> str | None:
        return None if value >= self.low else f"be at least {self.low}"


@dataclasses.dataclass(frozen=True)
class Interval(Rule):
    """low <= value <= high, either end open; a non-finite value lies in no interval."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def problem(self, value: Any) -> str | None:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        if above and below and math.isfinite(value):
            return None
        if math.isinf(self.high):
            return f"be finite and {'above' if self.low_open else 'at least'} {self.low:g}"
        left, right = "(["[not self.low_open], ")]"[not self.high_open]
        return f"lie in {left}{self.low:g}, {self.high:g}{right}"


@dataclasses.dataclass(frozen=True)
class OneOf(Rule):
    choices: tuple

    def __init__(self, choices: typing.Iterable) -> None:
        object.__setattr__(self, "choices", tuple(choices))

    def problem(self, value: Any) -> str | None:
        return None if value in self.choices else f"be one of {', '.join(map(repr, self.choices))}"


# the kinds of value most fields take
Size = Annotated[int, AtLeast(1)]  # a width, a length, a number of layers or of items
Count = Annotated[int, AtLeast(0)]  # 0 or more; a token id, a seed, "0 = none"
Probability = Annotated[float, Interval(0.0, 1.0, high_open=True)]  # dropout: [0, 1)
Fraction = Annotated[float, Interval(0.0, 1.0, low_open=True, high_open=True)]  # (0, 1)
PositiveFloat = Annotated[float, Interval(0.0, low_open=True, high_open=True)]  # finite, > 0
NonNegativeFloat = Annotated[float, Interval(0.0, high_open=True)]  # finite, >= 0

_SECTION: ContextVar[str | None] = ContextVar("archlab_config_section", default=None)


class Config:
    """Base of every config dataclass: each field's annotation declares its valid values.

    :meth:`__post_init__` checks every field against its annotation; a subclass with
    rules that tie fields together adds them in its own ``__post_init__``, after
    ``super().__post_init__()`` (so each field is known to be in range), naming keys
    with :meth:`key`.
    """

    section: ClassVar[str] = "model"  # the recipe section, for configs built directly

    def __post_init__(self) -> None:
        for name, tp in field_types(type(self)).items():
            value = getattr(self, name)
            found = _problem(value, tp)
            if found is not None:
                where, what, got = found
                raise ConfigError(f"{self.key(name)}{where} must {what}, got {got!r}")

    def key(self, name: str) -> str:
        """A field as the user wrote it: ``model.n_head``, or ``gpt.n_head`` in create_model."""
        return f"{_SECTION.get() or self.section}.{name}"

    def require_divisible(self, name: str, by: str) -> None:
        if getattr(self, name) % getattr(self, by):
            raise ConfigError(
                f"{self.key(name)} ({getattr(self, name)}) must be divisible by {self.key(by)} "
                f"({getattr(self, by)})"
            )

    def require_below(self, name: str, limit: str) -> None:
        """A token id below the vocabulary size, an index below a count."""
        if getattr(self, name) >= getattr(self, limit):
            raise ConfigError(
                f"{self.key(name)} must lie in [0, {self.key(limit)}) = [0, "
                f"{getattr(self, limit)}), got {getattr(self, name)}"
            )


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Each field of dataclass ``cls`` and its annotation, ranges (``Annotated``) included."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


_BASE_TYPES = {
    bool: ((bool,), "be true or false"),
    int: ((int,), "be an integer"),
    float: ((int, float), "be a number"),
    str: ((str,), "be a string"),
}


def _problem(value: Any, tp: Any) -> tuple[str, str, Any] | None:
    """What is wrong with ``value`` for ``tp``: (where in it, must what, the value), or None."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *rules = typing.get_args(tp)
        found = _problem(value, base)
        if found is not None:
            return found
        for rule in rules:
            what = rule.problem(value)
            if what is not None:
                return "", what, value
        return None
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        found = [_problem(value, arg) for arg in args if arg is not type(None)]
        if any(f is None for f in found):
            return None
        where, what, got = found[0]
        if type(None) in args and not where:
            what = "be null or " + what.removeprefix("be ")
        return where, what, got
    if origin is list:
        if not isinstance(value, list | tuple):
            return "", "be a list", value
        (item,) = typing.get_args(tp)
        for i, v in enumerate(value):
            found = _problem(v, item)
            if found is not None:
                return f"[{i}]{found[0]}", found[1], found[2]
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return "", "be a mapping", value
        _, item = typing.get_args(tp)
        for k, v in value.items():
            found = _problem(v, item)
            if found is not None:
                return f".{k}{found[0]}", found[1], found[2]
        return None
    if tp in _BASE_TYPES:
        kinds, what = _BASE_TYPES[tp]
        if not isinstance(value, kinds) or (tp is not bool and isinstance(value, bool)):
            return "", what, value
    return None


def to_dataclass(cls: type, values: dict[str, Any], section: str, ignore: tuple[str, ...] = ()):
    """Build ``cls`` from a recipe section, checking names and converting types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key in ignore:
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=3)
            near = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"unknown key {section}.{key}{near} (valid keys: {', '.join(sorted(fields))})"
            )
        kwargs[key] = coerce(value, hints[key], f"{section}.{key}")
    token = _SECTION.set(section)  # a Config's checks name its keys section.key
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field left out
        raise ConfigError(f"section {section!r}: {exc}") from None
    finally:
        _SECTION.reset(token)


def as_plain(obj: Any) -> Any:
    """Dataclasses and raw strings as plain YAML-able values."""
    if dataclasses.is_dataclass(obj):
        return {f.name: as_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: as_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [as_plain(v) for v in obj]
    if isinstance(obj, _RawValue):
        return str(obj)
    return obj


def yaml_text(data: dict) -> str:
    """``data`` as YAML in its own order, as config.yaml and recipes are written."""
    return yaml.safe_dump(as_plain(data), sort_keys=False)


def dump_yaml(data: dict, path: Path) -> None:
    path.write_text(yaml_text(data), encoding="utf-8")
