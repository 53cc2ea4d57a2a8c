"""Frozen, validated configuration loaded from TOML recipes in ``pipelines/``.

Each section is a frozen dataclass; unknown keys and wrong types are a
:class:`~chexnet_dicom.errors.ConfigError` at load time, so a typo never becomes a
silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from chexnet_dicom.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "IngestLimits",
    "PixelPolicy",
    "IngestConfig",
    "from_mapping",
    "load_toml",
]

MiB = 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True)
class IngestLimits:
    """Caps checked on the header before any pixel data is decoded.

    Attributes
    ----------
    max_file_bytes
        Largest file read at all.
    max_rows, max_columns
        Largest image matrix accepted.
    max_frames
        Largest NumberOfFrames read (analysis itself needs a single frame).
    max_bits_allocated
        Largest BitsAllocated.
    max_decoded_bytes
        Largest decoded pixel buffer (rows x columns x frames x samples x bytes).
    max_inflated_bytes
        Largest size a Deflated Explicit VR file may inflate to.
    """

    max_file_bytes: int = 1024 * MiB
    max_rows: int = 16384
    max_columns: int = 16384
    max_frames: int = 4096
    max_bits_allocated: int = 32
    max_decoded_bytes: int = 1024 * MiB
    max_inflated_bytes: int = 512 * MiB

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) <= 0:
                raise ConfigError(f"ingest limit {f.name} must be positive")


@dataclass(frozen=True)
class PixelPolicy:
    """How stored pixels become the display image the model sees.

    Attributes
    ----------
    inversion
        What to do when image content says the grey scale is inverted relative to the
        header: ``"correct"`` (invert and flag, default), ``"flag"`` (flag only) or
        ``"ignore"``.
    orientation
        ``"correct"`` rotates/flips to the standard frontal orientation using
        PatientOrientation (default), ``"flag"`` only records it, ``"ignore"``.
    window_index
        Which of several VOI windows / VOI LUTs to use.
    window_fallback
        Replace a window lying outside the stored data by a percentile window.
    fast_path
        Decode at reduced resolution when the codec allows it.
    """

    inversion: Literal["correct", "flag", "ignore"] = "correct"
    orientation: Literal["correct", "flag", "ignore"] = "correct"
    window_index: int = 0
    window_fallback: bool = True
    fast_path: bool = True

    def __post_init__(self) -> None:
        if self.inversion not in ("correct", "flag", "ignore"):
            raise ConfigError(f"pixels.inversion must be correct, flag or ignore, not {self.inversion!r}")
        if self.orientation not in ("correct", "flag", "ignore"):
            raise ConfigError(f"pixels.orientation must be correct, flag or ignore, not {self.orientation!r}")
        if self.window_index < 0:
            raise ConfigError("pixels.window_index must be >= 0")


@dataclass(frozen=True)
class IngestConfig:
    """Reading limits plus pixel policy."""

    limits: IngestLimits = field(default_factory=IngestLimits)
    pixels: PixelPolicy = field(default_factory=PixelPolicy)


def _check_type(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a table")
        return from_mapping(hint, value, _prefix=name)
    if origin is Literal:
        if value not in typing.get_args(hint):
            allowed = ", ".join(repr(a) for a in typing.get_args(hint))
            raise ConfigError(f"{name} must be one of {allowed}, not {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is type(None) and value is None:
                return None
            try:
                return _check_type(name, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{name} has the wrong type ({type(value).__name__})")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list")
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return tuple(_check_type(f"{name}[]", v, inner) for v in value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Path and isinstance(value, str):
        return Path(value)
    if isinstance(hint, type):
        if hint is int and isinstance(value, bool):
            raise ConfigError(f"{name} must be an integer")
        if not isinstance(value, hint):
            raise ConfigError(f"{name} must be {hint.__name__}, not {type(value).__name__}")
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
