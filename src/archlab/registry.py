"""Names -> models.  ``create_model("gpt", n_layer=2)`` builds any registered model.

A model file registers its class with :func:`register_model`, naming the config
dataclass it takes; a name may fix some config fields (``lstm`` and ``gru`` are one
class with a different ``cell``).  The class names its role
(:mod:`archlab.models.roles`) in its ``role`` attribute.  Tests are parametrized over
:func:`list_models`, so a model is tested the moment it is registered.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from archlab.errors import ConfigError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    model_cls: type[nn.Module]
    config_cls: type
    defaults: dict[str, Any] = field(default_factory=dict)
    summary: str = ""

    @property
    def role(self) -> type:
        """The model's role (:mod:`archlab.models.roles`): what its forward returns."""
        return self.model_cls.role

    def make_config(self, **overrides: Any) -> Any:
        return build_config(self.config_cls, {**self.defaults, **overrides}, what=self.name)


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str, config_cls: type, *, defaults: dict[str, Any] | None = None, summary: str = ""
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def wrap(model_cls: type[nn.Module]) -> type[nn.Module]:
        if name in _MODELS:
            raise RuntimeError(f"model name {name!r} registered twice")
        if not isinstance(getattr(model_cls, "role", None), type):
            raise RuntimeError(f"model {name!r} must name its role (archlab.models.roles)")
        doc = summary or (model_cls.__doc__ or "").strip().splitlines()[0]
        _MODELS[name] = ModelEntry(name, model_cls, config_cls, dict(defaults or {}), doc)
        return model_cls

    return wrap


def _load_models() -> None:
    import archlab.models  # noqa: F401  (registers every model)


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(known))})"


def model_entry(name: str) -> ModelEntry:
    _load_models()
    if name not in _MODELS:
        raise ConfigError(unknown_name_message("model", name, list(_MODELS)))
    return _MODELS[name]


def list_models() -> list[str]:
    _load_models()
    return sorted(_MODELS)


def create_model(name: str, **config_overrides: Any) -> nn.Module:
    """Build model ``name`` with its default config, changed by ``config_overrides``."""
    entry = model_entry(name)
    return entry.model_cls(entry.make_config(**config_overrides))


def build_config(config_cls: type, values: dict[str, Any], what: str) -> Any:
    """Instantiate a config dataclass, naming any unknown field and its nearest valid ones."""
    from archlab.config import to_dataclass

    return to_dataclass(config_cls, values, what)
