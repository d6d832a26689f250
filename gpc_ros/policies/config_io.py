"""Strict conversion between the policies' frozen config dataclasses and plain JSON-able dicts.

``config_from_dict`` is strict on purpose: a checkpoint's config must describe the model FULLY, so an unknown or a
missing field is an error naming the field path (e.g. ``config.observation.image.width``), and every value passes
the dataclass's own ``__post_init__`` validation.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A (nested) config dataclass -> dict of JSON types (tuples become lists)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"expected a config dataclass; got {type(config).__name__}")
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def config_from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """``cls(**data)`` recursively; ``ValueError`` naming ``where.field`` on unknown, missing or invalid fields."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object for {cls.__name__}; got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    missing = [n for n in names if n not in data]
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {unknown}; {cls.__name__} has {names}")
    if missing:
        raise ValueError(f"{where} lacks field(s) {missing} of {cls.__name__}; a checkpoint config must be complete")
    kwargs: dict[str, Any] = {}
    for name in names:
        kind, value = hints[name], data[name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            value = config_from_dict(kind, value, f"{where}.{name}")
        elif typing.get_origin(kind) is tuple:
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{where}.{name} must be a list; got {value!r}")
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
