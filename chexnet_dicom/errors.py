"""Typed error hierarchy for chexnet-dicom.

Every error raised on purpose by the package derives from :class:`ChexDicomError`.
Messages say what was wrong and what to do about it, and never contain PHI
(patient names, IDs, dates or UIDs): callers quote hashed references from
:func:`chexnet_dicom.logs.phi_ref` instead.

The CLI's exit codes are the ``EXIT_*`` constants below: :func:`exit_code_for` maps an
error that ends a command to 2 (:class:`ConfigError`) or 1; commands return
:data:`EXIT_INCOMPLETE` (3) themselves when results were written but an input could
not be analysed.
"""

from __future__ import annotations

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INCOMPLETE",
    "EXIT_OK",
    "EXIT_USAGE",
    "ChexDicomError",
    "ConfigError",
    "InputError",
    "NotDicomError",
    "UnsupportedInputError",
    "InputTooLargeError",
    "CorruptPixelDataError",
    "CorruptHeaderError",
    "ModelError",
    "WeightsError",
    "InferenceError",
    "OutputError",
    "StorageError",
    "TransferError",
    "exit_code_for",
]


class ChexDicomError(Exception):
    """Base class of every error raised on purpose by chexnet-dicom."""


class ConfigError(ChexDicomError, ValueError):
    """A configuration file, option or environment variable is invalid."""


class InputError(ChexDicomError, ValueError):
    """An input file cannot be analysed.

    Parameters
    ----------
    message
        Human readable explanation (no PHI).
    reason
        Machine readable reason code (see :mod:`chexnet_dicom.dicom.gate`).
    """

    default_reason = "INPUT"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason: str = reason or self.default_reason


class NotDicomError(InputError):
    """The file is not a DICOM Part 10 file or dataset."""

    default_reason = "NOT_DICOM"


class CorruptHeaderError(InputError):
    """The DICOM header cannot be parsed or holds invalid values that matter."""

    default_reason = "CORRUPT_HEADER"


class UnsupportedInputError(InputError):
    """A valid DICOM file that this toolkit cannot analyse (codec, modality, view...)."""

    default_reason = "UNSUPPORTED"


class InputTooLargeError(InputError):
    """The header declares more data than the configured caps allow."""

    default_reason = "TOO_LARGE"


class CorruptPixelDataError(InputError):
    """Pixel Data is truncated or the compressed stream cannot be decoded."""

    default_reason = "CORRUPT_PIXELS"


class ModelError(ChexDicomError, RuntimeError):
    """Base class for model problems."""


class WeightsError(ModelError):
    """A checkpoint is missing, tampered with, in an unknown format or mismatched."""


class InferenceError(ModelError):
    """The model produced an invalid result (NaN/Inf) or could not run."""


class OutputError(ChexDicomError, ValueError):
    """A DICOM or JSON result could not be built or failed validation."""


class StorageError(ChexDicomError, OSError):
    """Local storage is full, above its watermark or not writable."""


class TransferError(ChexDicomError, ConnectionError):
    """A DICOM peer is down, refused the association or the store."""


#: CLI exit codes.
#: 0: success -- every DICOM file meant for analysis was analysed (files out of scope
#: and non-DICOM files met while walking a folder do not count against it).
EXIT_OK = 0
#: 1: runtime failure -- a study failed (nothing written for it), no study found,
#: unreadable weights, an unexpected error.
EXIT_FAILURE = 1
#: 2: usage or configuration error.
EXIT_USAGE = 2
#: 3: results written, but a DICOM file meant for analysis could not be analysed (corrupt
#: header or pixels, too large, a decoder that gave up, missing UIDs), or a path named on
#: the command line is not DICOM.
EXIT_INCOMPLETE = 3


def exit_code_for(exc: BaseException) -> int:
    """Return the CLI exit code for an exception.

    Parameters
    ----------
    exc
        The exception that ended the command.

    Returns
    -------
    int
        2 for :class:`ConfigError`, 1 for everything else.
    """
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    return EXIT_FAILURE
