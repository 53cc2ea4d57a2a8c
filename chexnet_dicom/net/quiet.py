"""pynetdicom as this package uses it: no identifiers in its logs, no handler of its own.

pynetdicom 3 logs the identifiers of C-FIND/C-MOVE requests and responses and the
contents of every PDU at DEBUG, and installs its own stderr handler at import
(``_config.LOG_HANDLER_LEVEL = "standard"``).  :func:`quiet_pynetdicom` turns the
identifier logging off, removes that handler and caps the logger at WARNING, so
pynetdicom's messages reach the application's handlers (which redact them) and
never carry a patient's identifiers.
"""

from __future__ import annotations

import logging

__all__ = ["quiet_pynetdicom"]

_done = False


def quiet_pynetdicom() -> None:
    """Configure pynetdicom once for PHI-free logging (idempotent)."""
    global _done
    if _done:
        return
    from pynetdicom import _config

    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    logger = logging.getLogger("pynetdicom")
    for handler in list(logger.handlers):
        if not isinstance(handler, logging.NullHandler):
            logger.removeHandler(handler)
    logger.setLevel(logging.WARNING)
    _done = True
