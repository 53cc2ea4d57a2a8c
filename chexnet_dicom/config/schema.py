"""TOML tables into frozen, validated dataclasses: :func:`load_toml` and :func:`from_mapping`.

Unknown keys and wrong types are a :class:`~chexnet_dicom.errors.ConfigError` that names
the key path (``listen.port``) and the type expected, so a typo never becomes a silently
ignored setting.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from chexnet_dicom.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["MiB", "from_mapping", "load_toml"]

#: One mebibyte, the unit of the byte limits.
MiB = 1024 * 1024

T = TypeVar("T")


def type_name(hint: Any) -> str:
    """The type ``hint`` in the words of a TOML file: ``an integer``, ``a list of numbers``...

    Parameters
    ----------
    hint
        A field's type annotation (resolved).

    Returns
    -------
    str
        What a value of that type is called in error messages.
    """
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return "a table"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return "a list" + (
            f" of {_PLURAL.get(args[0], type_name(args[0]))}" if args and args[0] is not Any else ""
        )
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


_NAMES: dict[Any, str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    Path: "a path (string)",
    dict: "a table",
    list: "a list",
    tuple: "a list",
    Any: "any value",
}
_PLURAL: dict[Any, str] = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def _value_name(value: Any) -> str:
    """What the value given is, in TOML words (never the value itself: it may be a secret)."""
    for kind in (bool, int, float, str, dict, list, tuple):
        if isinstance(value, kind):
            return _NAMES[kind]
    return type(value).__name__


def _wrong(name: str, value: Any, hint: Any) -> ConfigError:
    return ConfigError(f"{name} must be {type_name(hint)}, not {_value_name(value)}")


def _check_type(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise _wrong(name, value, hint)
        return from_mapping(hint, value, _prefix=name)
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{name} must be {type_name(hint)}, not {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is type(None) and value is None:
                return None
            try:
                return _check_type(name, value, arg)
            except ConfigError:
                continue
        raise _wrong(name, value, hint)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _wrong(name, value, hint)
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return tuple(_check_type(f"{name}[{i}]", v, inner) for i, v in enumerate(value))
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Path and isinstance(value, str):
        return Path(value)
    if isinstance(hint, type) and (
        (isinstance(value, bool) and hint in (int, float)) or not isinstance(value, hint)
    ):
        raise _wrong(name, value, hint)
    return value


def from_mapping(cls: type[T], data: dict[str, Any], *, _prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, validating keys and types.

    Parameters
    ----------
    cls
        A dataclass type.
    data
        Parsed TOML table.

    Returns
    -------
    T
        The validated instance.

    Raises
    ------
    ConfigError
        On unknown keys, wrong types or invalid values.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f" in [{_prefix}]" if _prefix else ""
        raise ConfigError(
            f"unknown setting(s){where}: {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in data.items():
        full = f"{_prefix}.{key}" if _prefix else key
        kwargs[key] = _check_type(full, value, hints[key])
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid [{_prefix or cls.__name__}]: {exc}") from exc


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning any parse problem into :class:`ConfigError`.

    Parameters
    ----------
    path
        File to read.

    Returns
    -------
    dict
        The parsed document.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {p}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from exc
