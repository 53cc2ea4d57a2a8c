"""The one override path: dotted ``table.key`` settings on top of a TOML file or a config.

Every front door turns its command-line flags into ``{"runtime.device": "cpu", ...}``
and hands them here (``chexdcm train --set KEY=VALUE`` too), so the file's values and
the flags' are checked by the same rules and a bad one is reported by its key path and
the type expected.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from chexnet_dicom.config.schema import from_mapping, load_toml
from chexnet_dicom.errors import ConfigError

__all__ = ["apply_overrides", "load_config", "merge_overrides"]

T = TypeVar("T")


def _table_type(cls: type, dotted: str, parts: list[str]) -> type:
    """The dataclass holding the last of ``parts`` (each earlier part must name a table)."""
    where: list[str] = []
    for part in parts:
        hints = typing.get_type_hints(cls)
        if part not in hints:
            _unknown(dotted, where, cls)
        hint = hints[part]
        if not (dataclasses.is_dataclass(hint) and isinstance(hint, type)):
            raise ConfigError(f"setting {dotted!r}: {'.'.join([*where, part])} is not a table")
        where.append(part)
        cls = hint
    return cls


def _unknown(dotted: str, where: list[str], cls: type) -> typing.NoReturn:
    table = f"[{'.'.join(where)}]" if where else "the top level"
    known = ", ".join(sorted(f.name for f in dataclasses.fields(cls)))
    raise ConfigError(f"unknown setting {dotted!r}: {table} has {known}")


def merge_overrides(cls: type, doc: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the parsed document ``doc`` with each dotted setting of ``overrides`` put in.

    Parameters
    ----------
    cls
        The configuration dataclass the document describes (it says which keys exist).
    doc
        Parsed TOML (``{table: {key: value}}``); not modified.
    overrides
        ``{"table.key": value}`` (``"key"`` for a top-level setting, ``"a.b.key"`` for a
        nested table); they replace the document's values.

    Returns
    -------
    dict
        The merged document, still to be validated by :func:`from_mapping`.

    Raises
    ------
    ConfigError
        A key that names no setting of ``cls``, or a table where a value belongs; the
        message names the key and lists the table's settings.
    """
    merged = _copy(doc)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if not all(parts):
            raise ConfigError(f"setting {dotted!r} must be KEY or TABLE.KEY")
        owner = _table_type(cls, dotted, parts[:-1])
        if parts[-1] not in {f.name for f in dataclasses.fields(owner)}:
            _unknown(dotted, parts[:-1], owner)
        target = merged
        for i, part in enumerate(parts[:-1]):
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{'.'.join(parts[: i + 1])} must be a table")
        target[parts[-1]] = value
    return merged


def _copy(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in doc.items()}


def load_config(cls: type[T], path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> T:
    """Read ``path`` (TOML; None: the defaults), put ``overrides`` on top, validate as ``cls``.

    Parameters
    ----------
    cls
        The configuration dataclass (:class:`~chexnet_dicom.config.NodeConfig`, ...).
    path
        TOML file, or None.
    overrides
        Dotted settings, as :func:`merge_overrides`.

    Returns
    -------
    T
        The validated configuration.

    Raises
    ------
    ConfigError
        A missing or invalid file, unknown keys, wrong types, invalid values (the
        message names the key path).
    """
    doc = load_toml(path) if path is not None else {}
    return from_mapping(cls, merge_overrides(cls, doc, overrides or {}))


def apply_overrides(config: T, overrides: Mapping[str, Any]) -> T:
    """``config`` with dotted settings replaced, validated again as a whole.

    Parameters
    ----------
    config
        A configuration dataclass instance.
    overrides
        ``{"runtime.device": "cuda:1", ...}``, as :func:`merge_overrides`.

    Returns
    -------
    T
        A new instance of the same class.

    Raises
    ------
    ConfigError
        As :func:`merge_overrides` and :func:`from_mapping`.
    """
    if not overrides:
        return config
    cls = type(config)
    doc = dataclasses.asdict(config)  # type: ignore[call-overload]
    return from_mapping(cls, merge_overrides(cls, doc, overrides))
