"""Reason codes: why a file was not analysed, one vocabulary for every stage and front door.

The header gate (:mod:`chexnet_dicom.dicom.gate`) gives the first failing check in
:data:`REASON_PRECEDENCE`; the scan (:mod:`chexnet_dicom.dicom.study`) adds the codes of
its walking and selection rules; typed :class:`~chexnet_dicom.errors.InputError`
subclasses carry the same codes as their ``reason``.  :data:`REASONS` describes each one
(status and meaning) for ``--help`` texts, the README and the tables of batch runs.

A status is ``"error"`` when the file is defective (the analysis was meant to run on it
and could not), ``"skipped"`` when it is out of scope or redundant.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "BODY_PART",
    "COLOR",
    "CORRUPT_HEADER",
    "CORRUPT_PIXELS",
    "DUPLICATE_INSTANCE",
    "ERROR_REASONS",
    "counts_against_run",
    "FOR_PROCESSING_REDUNDANT",
    "INTERNAL",
    "MISSING_FILE",
    "MISSING_UID",
    "MODALITY",
    "MULTIFRAME",
    "NOT_DICOM",
    "NOT_HUMAN",
    "NOT_IMAGE",
    "OUTSIDE_ROOT",
    "REASONS",
    "REASON_PRECEDENCE",
    "Status",
    "TOO_LARGE",
    "UNSUPPORTED_CODEC",
    "VIEW_NOT_FRONTAL",
    "status_for",
]

Status = Literal["skipped", "error"]

NOT_DICOM = "NOT_DICOM"
CORRUPT_HEADER = "CORRUPT_HEADER"
TOO_LARGE = "TOO_LARGE"
NOT_IMAGE = "NOT_IMAGE"
MODALITY = "MODALITY"
COLOR = "COLOR"
MULTIFRAME = "MULTIFRAME"
NOT_HUMAN = "NOT_HUMAN"
BODY_PART = "BODY_PART"
VIEW_NOT_FRONTAL = "VIEW_NOT_FRONTAL"
UNSUPPORTED_CODEC = "UNSUPPORTED_CODEC"
CORRUPT_PIXELS = "CORRUPT_PIXELS"
#: The SOP Instance UID was already seen in an earlier file.
DUPLICATE_INSTANCE = "DUPLICATE_INSTANCE"
#: A DX "FOR PROCESSING" image in a study that has a processed image of its own.
FOR_PROCESSING_REDUNDANT = "FOR_PROCESSING_REDUNDANT"
#: StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID is missing or empty.
MISSING_UID = "MISSING_UID"
#: A symbolic link inside a walked folder, or a path a DICOMDIR references, leads outside it.
OUTSIDE_ROOT = "OUTSIDE_ROOT"
#: A file that a DICOMDIR references does not exist.
MISSING_FILE = "MISSING_FILE"
#: An unexpected failure (a bug or a library's untyped error) while handling one file.
INTERNAL = "INTERNAL"

#: The order in which the header checks run; the first failing check gives the reason.
REASON_PRECEDENCE: tuple[str, ...] = (
    NOT_DICOM,
    CORRUPT_HEADER,
    TOO_LARGE,
    NOT_IMAGE,
    MODALITY,
    COLOR,
    MULTIFRAME,
    NOT_HUMAN,
    BODY_PART,
    VIEW_NOT_FRONTAL,
    UNSUPPORTED_CODEC,
    CORRUPT_PIXELS,
)

#: code -> (status, meaning), in the order the README documents them.
REASONS: dict[str, tuple[Status, str]] = {
    NOT_DICOM: ("error", "not DICOM: missing or unreadable, empty, no preamble/DICM and no plausible first element"),
    CORRUPT_HEADER: ("error", "truncated or unparsable header, stray delimiter, an Image Pixel attribute that is "
                              "not a valid integer (Rows, Columns, BitsAllocated, BitsStored, frames, ...)"),
    TOO_LARGE: ("error", "file, inflated dataset, image matrix, frames, BitsAllocated or decoded bytes above the caps"),
    NOT_IMAGE: ("skipped", "no image matrix (SR, waveform, RT plan, ...)"),
    MODALITY: ("skipped", "not a CR/DX radiograph; Secondary Capture only when it says it is a chest radiograph"),
    COLOR: ("skipped", "not MONOCHROME1/2 with one sample per pixel"),
    MULTIFRAME: ("skipped", "NumberOfFrames > 1"),
    NOT_HUMAN: ("skipped", "veterinary image (species or breed attributes, animal words)"),
    BODY_PART: ("skipped", "the header names another body part than the chest"),
    VIEW_NOT_FRONTAL: ("skipped", "lateral, oblique, decubitus or axial view"),
    UNSUPPORTED_CODEC: ("skipped", "no installed decoder for the transfer syntax (an error when a decoder gives up)"),
    CORRUPT_PIXELS: ("error", "accepted by the header gate, but the pixel data is truncated or does not decode"),
    DUPLICATE_INSTANCE: ("skipped", "the same SOP Instance UID as another file, which is used instead"),
    FOR_PROCESSING_REDUNDANT: ("skipped", "a DX FOR PROCESSING image in a study that has its processed image"),
    MISSING_UID: ("error", "StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID missing: cannot be placed in a study"),
    OUTSIDE_ROOT: ("skipped", "a symbolic link inside a walked folder, or a DICOMDIR reference, that leads outside "
                              "it: not followed"),
    MISSING_FILE: ("error", "a file that a DICOMDIR references does not exist (an incomplete export)"),
    INTERNAL: ("error", "an unexpected failure while handling the file (please report it)"),
}  # fmt: skip

#: Reasons that mean the file is defective (status ``error``), not merely out of scope.
ERROR_REASONS = frozenset(code for code, (status, _) in REASONS.items() if status == "error")


def counts_against_run(status: str, reason: str | None, *, named: bool) -> bool:
    """Whether a file's outcome makes a run incomplete (exit code 3 of ``infer`` and ``check --strict``).

    A defective file (status ``error``) does; a file out of scope (``skipped``) does not,
    and neither does a non-DICOM file met while walking a folder (a README beside the
    images) -- unless the user named that path explicitly.

    Parameters
    ----------
    status, reason
        The file's outcome.
    named
        The path was given on the command line (not found by walking a folder).
    """
    return status == "error" and (reason != NOT_DICOM or named)


def status_for(reason: str) -> Status:
    """``"error"`` for a defect (:data:`ERROR_REASONS`), ``"skipped"`` for everything else.

    ``UNSUPPORTED_CODEC`` is ``"skipped"`` here (the header names a syntax no installed
    decoder reads); a decoder that gives up while decoding reports it as an error itself.
    """
    return "error" if reason in ERROR_REASONS else "skipped"
