"""Logging set-up for the CLI and PHI-safe references.

Library code only ever logs through :mod:`logging`; :func:`setup_logging` is called by
the CLI.  Identifiers that could be PHI (UIDs, patient IDs, file names from a PACS
export) are logged as :func:`phi_ref` values: a keyed BLAKE2 hash, stable within a
process and across processes that share ``CHEXDCM_LOG_KEY``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import sys

__all__ = ["setup_logging", "phi_ref", "LOGGER_NAME"]

LOGGER_NAME = "chexnet_dicom"

_KEY: bytes = (os.environ.get("CHEXDCM_LOG_KEY") or secrets.token_hex(16)).encode()


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
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._chexdcm = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    # pynetdicom logs identifiers (AE titles, UIDs, patient data in dumps) at INFO/DEBUG.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
