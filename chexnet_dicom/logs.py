"""Logging set-up for the CLI and PHI-safe references.

Library code only ever logs through :mod:`logging`; :func:`setup_logging` is called by
the CLI.  Identifiers that could be PHI (UIDs, patient IDs, file names from a PACS
export) are logged as :func:`phi_ref` values: a keyed BLAKE2 hash.

One key per run, or per node
----------------------------
The key is drawn once per process (or taken from ``CHEXDCM_LOG_KEY``).  Worker processes
of the same run get the parent's key (:func:`log_key` passed to :func:`use_log_key` in
the worker initializer), so every process of a run logs the same reference for the same
file; a long-lived service keeps its key in its own folder
(:func:`persistent_log_key`), so its references stay stable across restarts.

Failures without values
-----------------------
:func:`redact` blanks what a library's message may quote (quoted strings, UIDs, dates,
long numbers); :func:`log_failure` writes a traceback of frames (file, line, function)
and the exception type to the debug log, never the exception's message or local values.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import sys
import traceback
import warnings
from pathlib import Path

__all__ = [
    "LOGGER_NAME",
    "log_failure",
    "log_key",
    "persistent_log_key",
    "phi_ref",
    "redact",
    "route_library_messages",
    "setup_logging",
    "use_log_key",
]

LOGGER_NAME = "chexnet_dicom"

_KEY: bytes = (os.environ.get("CHEXDCM_LOG_KEY") or secrets.token_hex(16)).encode()


def log_key() -> bytes:
    """The key :func:`phi_ref` hashes with in this process (pass it to worker processes)."""
    return _KEY


def use_log_key(key: bytes) -> None:
    """Hash with ``key`` from now on (a worker initializer, or a service's persisted key).

    Parameters
    ----------
    key
        At least 16 bytes.
    """
    global _KEY
    if len(key) < 16:
        raise ValueError("a log key needs at least 16 bytes")
    _KEY = bytes(key)


def persistent_log_key(path: str | os.PathLike[str]) -> bytes:
    """Read the key kept at ``path``, creating it (mode 0600) on first use, and use it.

    Parameters
    ----------
    path
        A file in the service's own folder (for example the node's spool).

    Returns
    -------
    bytes
        The key now in use.
    """
    from chexnet_dicom.atomic import atomic_write

    p = Path(path)
    if not p.is_file():
        atomic_write(p, secrets.token_hex(32), mode=0o600)
    key = p.read_bytes().strip()
    use_log_key(key)
    return key


def phi_ref(value: object, *, prefix: str = "ref") -> str:
    """Return a short keyed hash of ``value`` that can be logged safely.

    Parameters
    ----------
    value
        Anything whose ``str`` may identify a patient (UID, name, path).
    prefix
        Short label put in front of the hash.

    Returns
    -------
    str
        For example ``"ref:3f9a1c02b7d4"``.
    """
    digest = hashlib.blake2b(str(value).encode("utf-8", "replace"), key=_KEY[:64], digest_size=6)
    return f"{prefix}:{digest.hexdigest()}"


_REDACTIONS = (
    (re.compile(r"'[^']*'|\"[^\"]*\""), "'…'"),  # quoted values
    (re.compile(r"\b\d+(?:\.\d+){2,}\b"), "<uid>"),  # UIDs and dotted numbers
    (re.compile(r"\b\d{6,}\b"), "<number>"),  # dates, IDs, long numbers
)


def redact(text: object, limit: int = 160) -> str:
    """A library's message with what may be PHI blanked out, shortened to ``limit``.

    Parameters
    ----------
    text
        An exception message or other text from outside this package.
    limit
        Longest result.

    Returns
    -------
    str
        Quoted strings become ``'…'``, UIDs ``<uid>``, runs of six or more digits
        (dates, IDs) ``<number>``; white space is folded.
    """
    out = " ".join(str(text).split())
    for pattern, replacement in _REDACTIONS:
        out = pattern.sub(replacement, out)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def log_failure(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log, at DEBUG, where ``exc`` was raised: frames and its type, never its message or values.

    Parameters
    ----------
    logger
        The logger of the module that caught it.
    what
        What failed (no PHI), for example ``"study ref:3f9a1c02b7d4: outputs"``.
    exc
        The exception.
    """
    if not logger.isEnabledFor(logging.DEBUG):
        return
    frames = traceback.extract_tb(exc.__traceback__)
    lines = [f"  {Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames]
    logger.debug("%s failed with %s; traceback (no values):\n%s", what, type(exc).__name__, "\n".join(lines))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (not when it was made)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:  # the base class assigns it; the property wins
        pass


class _RedactingFilter(logging.Filter):
    """Rewrites a library's record with :func:`redact` applied to its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), limit=300)
        record.args = ()
        return True


def _warning_to_log(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` replacement: a library's warning goes to the debug log, redacted."""
    source = Path(filename).parent.name or Path(filename).stem
    logging.getLogger(f"{LOGGER_NAME}.library").debug(
        "%s from %s: %s", category.__name__, source, redact(message, limit=300)
    )


def route_library_messages() -> None:
    """Keep the values pydicom and highdicom quote out of the terminal and the logs.

    pydicom warns (and logs) ``Invalid value for VR UI: '1.2.3...'``; highdicom warns
    with the patient name.  Their warnings go to this package's debug log instead of
    stderr, and their log records are redacted (:func:`redact`): keywords and VRs stay,
    values do not.  Called by :func:`setup_logging` (the CLI and the services); library
    users keep their own warning handling.
    """
    warnings.showwarning = _warning_to_log
    for name in ("pydicom", "highdicom", "pynetdicom"):
        lib = logging.getLogger(name)
        if not any(isinstance(f, _RedactingFilter) for f in lib.filters):
            lib.addFilter(_RedactingFilter())


def setup_logging(verbosity: int = 0) -> None:
    """Configure the package logger for command-line use (stderr).

    Parameters
    ----------
    verbosity
        0 warnings, 1 info, 2 or more debug.
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    if not any(getattr(h, "_chexdcm", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._chexdcm = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    # pynetdicom logs identifiers (AE titles, UIDs, patient data in dumps) at INFO/DEBUG.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    route_library_messages()
