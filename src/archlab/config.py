"""Recipes: YAML with four sections, ``task``, ``data``, ``model`` and ``trainer``.

Each section is resolved into a dataclass, so every key is checked and every
value typed: ``task`` and ``data`` by the task named in ``task.name``, ``model``
by the config of the model named in ``model.name``, ``trainer`` by
:class:`archlab.train.TrainerConfig`.  ``--set a.b=value`` overrides one key; an
unknown key fails with the valid keys nearest to it, a value of the wrong type
names the key and the type it expects.  The fully resolved recipe (every field,
defaults included) is what a run directory's ``config.yaml`` holds.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

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
    """Whether ``value`` was given on the command line (``--set``), not by the recipe."""
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
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field left out
        raise ConfigError(f"section {section!r}: {exc}") from None


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


def dump_yaml(data: dict, path: Path) -> None:
    path.write_text(yaml.safe_dump(as_plain(data), sort_keys=False), encoding="utf-8")
