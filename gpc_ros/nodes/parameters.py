"""The one helper mapping a frozen config dataclass onto ROS parameters, for every gpc_ros node.

Each field becomes one parameter (nested dataclasses as dotted names, ``timing.blend_mode``); its default and its
description are written once, in the dataclass (the field's docstring, the string literal right under it, is the
description). Tuples become ROS arrays. Values are validated when set: a ``ros2 param set`` (or ``SetParameters``
call) that the dataclass's ``__post_init__`` refuses is rejected with that ``ValueError``'s text, and the node keeps
its previous config. Fields not listed as ``dynamic`` are read-only at run time (ROS refuses to change them).
"""

from __future__ import annotations

import ast
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult


@dataclass(frozen=True)
class ParameterField:
    """One flattened field: dotted ``name``, ROS-ready ``default``, ``description`` and the python ``kind``."""

    name: str
    default: Any
    description: str
    kind: str
    """``bool | int | float | str | tuple``: how a ROS value is turned back into the field's type; ``any`` for a
    union-typed field (e.g. ``bool | Literal["auto"]``): its ROS type is free and the dataclass validates it."""


@cache
def _module_classes(path: str) -> dict[str, ast.ClassDef]:
    """Every class definition (nested ones too) of a source file, by name."""
    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, SyntaxError):
        return {}
    return {node.name: node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}


def _attributes_section(docstring: str) -> dict[str, str]:
    """Google-style ``Attributes:`` entries (``name: text`` or ``a, b: text``, continuation lines indented)."""
    out: dict[str, str] = {}
    lines = docstring.expandtabs().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return out
    indent, names = None, []
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        if indent is None:
            indent = width
        if width < indent:
            break
        if width == indent and ":" in line:
            head, text = line.strip().split(":", 1)
            names = [n.strip() for n in head.split(",")]
            for name in names:
                out[name] = text.strip()
        else:
            for name in names:
                out[name] = f"{out[name]} {line.strip()}"
    return out


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its description, for a dataclass and its bases.

    The description is the string literal under the field, else the class docstring's ``Attributes:`` entry
    (Google style).
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        module = sys.modules.get(klass.__module__)
        if klass is object or not is_dataclass(klass) or not getattr(module, "__file__", None):
            continue
        docs.update(_attributes_section(klass.__doc__ or ""))
        node = _module_classes(module.__file__).get(klass.__name__)
        body = node.body if node is not None else []
        for item, after in zip(body, body[1:] + [None]):
            if (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[item.target.id] = " ".join(after.value.value.split())
    return docs


def _default(f) -> Any:
    return f.default if f.default is not MISSING else f.default_factory()


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (tuple, list)):
        return "tuple"
    raise TypeError(f"config field of type {type(value).__name__} cannot be a ROS parameter "
                    f"(use bool, int, float, str, a tuple of them or a nested dataclass)")


def flat_fields(cls: type, descriptions: Mapping[str, str] | None = None, prefix: str = "",
                defaults: Any = None) -> list[ParameterField]:
    """Every init field of ``cls`` (nested dataclasses flattened to dotted names) as a :class:`ParameterField`.

    ``defaults``: an instance whose values are the defaults (nested configs take their parent's default instance,
    so ``field(default_factory=lambda: Inner(x=1))`` gives ``x = 1``).
    """
    descriptions = descriptions or {}
    docs = field_docs(cls)
    out: list[ParameterField] = []
    for f in fields(cls):
        if not f.init:
            continue
        default = getattr(defaults, f.name) if defaults is not None else _default(f)
        name = f"{prefix}{f.name}"
        if is_dataclass(default):
            out += flat_fields(type(default), descriptions, f"{name}.", default)
            continue
        annotation = f.type if isinstance(f.type, str) else repr(f.type)
        kind = "any" if ("|" in annotation or "Union" in annotation) else _kind(default)
        description = descriptions.get(name) or docs.get(f.name) or ""
        ros_default = list(default) if isinstance(default, tuple) else default
        out.append(ParameterField(name, ros_default, description, kind))
    return out


def _convert(field: ParameterField, value: Any) -> Any:
    """A ROS parameter value -> the field's python type (ints accepted for floats; arrays -> tuples)."""
    if field.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if field.kind == "str" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # digits written without quotes (serial numbers) under dynamic_typing
    if field.kind == "tuple":
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise ValueError(f"parameter {field.name!r} must be an array; got {value!r}")
        return tuple(value)
    if field.kind == "float" and not isinstance(value, float):
        raise ValueError(f"parameter {field.name!r} must be a number; got {value!r}")
    return value


def build_config(cls: type, values: Mapping[str, Any], prefix: str = "", defaults: Any = None) -> Any:
    """``cls`` built from dotted ``values`` (missing names take the defaults); raises what ``__post_init__`` raises."""
    kwargs = {}
    by_name = {p.name: p for p in flat_fields(cls, prefix=prefix, defaults=defaults)}
    for f in fields(cls):
        if not f.init:
            continue
        default = getattr(defaults, f.name) if defaults is not None else _default(f)
        name = f"{prefix}{f.name}"
        if is_dataclass(default):
            kwargs[f.name] = build_config(type(default), values, f"{name}.", default)
        elif name in values:
            kwargs[f.name] = _convert(by_name[name], values[name])
        elif defaults is not None:
            kwargs[f.name] = default
    return cls(**kwargs)


def config_values(config: Any, prefix: str = "") -> dict[str, Any]:
    """A config instance as dotted name -> ROS-ready value (tuples as lists)."""
    out: dict[str, Any] = {}
    for f in fields(config):
        if not f.init:
            continue
        value = getattr(config, f.name)
        if is_dataclass(value):
            out.update(config_values(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = list(value) if isinstance(value, tuple) else value
    return out


class ConfigParameters:
    """Declares ``cls``'s fields on ``node``, builds the config, and keeps it valid when parameters change.

    ``dynamic``: dotted names that may change at run time (the others are declared read-only);
    ``on_change(config)`` is called with the new config after a change was accepted; ``descriptions`` overrides or
    completes the field docstrings; ``dynamic_typing``: names whose ROS type is free (e.g. serials written as
    digits). ``config`` is always the last accepted config (read it once per use; it is replaced, never mutated).
    """

    def __init__(self, node, cls: type, *, dynamic: Iterable[str] = (), prefix: str = "",
                 descriptions: Mapping[str, str] | None = None, dynamic_typing: Iterable[str] = (),
                 on_change: Callable[[Any], None] | None = None) -> None:
        self.node, self.cls, self.prefix = node, cls, prefix
        self.fields = flat_fields(cls, descriptions)
        self.dynamic = set(dynamic)
        unknown = self.dynamic - {f.name for f in self.fields}
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)} to make dynamic")
        free = set(dynamic_typing)
        self._lock = threading.Lock()
        self._on_change = on_change
        for f in self.fields:
            self.node.declare_parameter(prefix + f.name, f.default, ParameterDescriptor(
                description=f.description, read_only=f.name not in self.dynamic,
                dynamic_typing=f.name in free or f.kind in ("float", "any") or (f.kind == "tuple" and not f.default)))
        values = {f.name: self.node.get_parameter(prefix + f.name).value for f in self.fields}
        self.config = self._build(values)
        self.node.add_on_set_parameters_callback(self._on_set)

    def _build(self, values: Mapping[str, Any]) -> Any:
        """Values -> config; TypeErrors from the dataclass become ValueErrors naming the class."""
        try:
            return build_config(self.cls, values)
        except TypeError as exc:
            raise ValueError(f"{self.cls.__name__}: {exc}") from None

    def _on_set(self, parameters) -> SetParametersResult:
        mine = {p.name[len(self.prefix):]: p.value for p in parameters
                if p.name.startswith(self.prefix) and p.name[len(self.prefix):] in {f.name for f in self.fields}}
        if not mine:
            return SetParametersResult(successful=True)
        with self._lock:
            values = {**config_values(self.config), **mine}
            try:
                config = self._build(values)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            self.config = config
        if self._on_change is not None:
            self._on_change(config)
        return SetParametersResult(successful=True)

    def replace(self, **changes: Any) -> Any:
        """A copy of the current config with ``changes`` (validated); does not touch the ROS parameters."""
        return replace(self.config, **changes)
