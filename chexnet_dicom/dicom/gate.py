"""Acceptance gate: is this a single-frame frontal chest radiograph we can analyse?

:func:`gate_header` decides from the header alone (it never touches pixel data);
:func:`chexnet_dicom.dicom.check.check_file` reads a file safely, gates it and, for
accepted files, decodes the display image the model sees, so that pixel errors exist only
for files that passed the header gate.  The reason codes live in
:mod:`chexnet_dicom.dicom.reasons`, the word lists in :mod:`chexnet_dicom.dicom.vocabulary`.

Reason codes and precedence
---------------------------
Header checks run in this order and the first that fails gives the reason; a file they
skip is never pixel-decoded.

======================  ========  ====================================================
reason                  status    meaning
======================  ========  ====================================================
``NOT_DICOM``           error     not a DICOM file (no preamble/prefix, no element)
``CORRUPT_HEADER``      error     truncated or unparsable header, invalid Rows/frames
``TOO_LARGE``           error     file, inflated data or declared image above the caps
``NOT_IMAGE``           skipped   no image matrix (SR, waveform, RT plan, ...)
``MODALITY``            skipped   not CR/DX (CT, MR, US, NM, MG, SEG, RT...); Secondary
                                  Capture only when it says it is a chest radiograph
``COLOR``               skipped   not MONOCHROME1/2 with one sample per pixel
``MULTIFRAME``          skipped   NumberOfFrames > 1
``NOT_HUMAN``           skipped   veterinary image (species attributes or words)
``BODY_PART``           skipped   header says another body part than the chest
``VIEW_NOT_FRONTAL``    skipped   lateral, oblique, decubitus or axial view
``UNSUPPORTED_CODEC``   skipped   no installed decoder for the transfer syntax
``CORRUPT_PIXELS``      error     accepted by the header gate, but pixels do not decode
======================  ========  ====================================================

``UNSUPPORTED_CODEC`` is an ``error`` when a decoder gives up during decoding rather
than at the header check.

View evidence
-------------
``ViewPosition`` decides when it holds a known term; else ``ViewCodeSequence``; else
the text attributes (SeriesDescription, AcquisitionDeviceProcessingDescription,
ProtocolName, PerformedProtocolCodeSequence, BodyPartExamined, StudyDescription,
RequestedProcedureDescription) and PatientOrientation are weighed: any text that names
only a non-frontal view (LATERAL, OBLIQUE, DECUBITUS, ...) or a PatientOrientation with
an anterior/posterior axis skips the file; otherwise a PatientOrientation made of a
left/right and a head/foot axis, a text naming only a frontal view (PA, AP, FRONTAL) or
ImageLaterality ``B`` accepts it. Text naming both (``"CHEST PA AND LAT"``) is not
evidence. A chest image without any view evidence is accepted with the flag
``view-unknown``. :attr:`GateDecision.view_evidence` says which attribute decided, as
``Attribute:TERM`` (``"none"`` when nothing did).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from chexnet_dicom.config import IngestLimits
from chexnet_dicom.dicom.attrs import ImagePixel, image_pixel, text, value
from chexnet_dicom.dicom.flags import (
    FLAG_BODY_PART_UNKNOWN,
    FLAG_FOR_PROCESSING,
    FLAG_SECONDARY_CAPTURE,
    FLAG_VIEW_UNKNOWN,
)
from chexnet_dicom.dicom.read import check_header_caps, codec_supported
from chexnet_dicom.dicom.reasons import (
    BODY_PART,
    COLOR,
    MODALITY,
    MULTIFRAME,
    NOT_HUMAN,
    NOT_IMAGE,
    UNSUPPORTED_CODEC,
    VIEW_NOT_FRONTAL,
)
from chexnet_dicom.dicom.vocabulary import (
    ACCEPTED_MODALITIES,
    CHEST_CODES,
    CHEST_TERMS,
    DX_PROCESSING,
    FRONTAL_CODES,
    FRONTAL_TERMS,
    HUMAN_CODES,
    HUMAN_SPECIES,
    NON_FRONTAL_CODES,
    NON_FRONTAL_TERMS,
    OTHER_BODY_TERMS,
    OTHER_MODALITY_TERMS,
    PROJECTION_CHEST_SOP,
    SECONDARY_CAPTURE_SOP,
    SPECIES_TERMS,
    TEXT_KEYWORDS,
    TEXT_NON_FRONTAL_TERMS,
    TS_NAMES,
)
from chexnet_dicom.errors import InputError

__all__ = ["GateDecision", "gate_header"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the header gate.

    Attributes
    ----------
    accepted
        True when the header describes an image this toolkit analyses.
    reason
        A reason code (see :data:`REASON_PRECEDENCE`) when not accepted, else None.
    message
        Human readable explanation (no PHI).
    flags
        Caveats of an accepted image (``view-unknown``, ``body-part-unknown``,
        ``secondary-capture``, ``for-processing``).
    view_evidence
        ``"Attribute:TERM"`` of the evidence that decided the view, ``"none"`` when
        nothing did, ``""`` when the view was not examined.
    body_part_evidence
        The same for the body part.
    """

    accepted: bool
    reason: str | None
    message: str
    flags: tuple[str, ...] = ()
    view_evidence: str = ""
    body_part_evidence: str = ""


# --------------------------------------------------------------------------------------
# Header helpers
# --------------------------------------------------------------------------------------


def _tokens(text: str) -> set[str]:
    text = re.sub(r"(?<=[A-Za-z])[-'](?=[A-Za-z])", "", text.upper())
    return {t for t in re.split(r"[^A-Z0-9]+", text) if t}


def _code_items(ds: Dataset, keyword: str) -> list[tuple[str, str]]:
    seq = value(ds, keyword)
    out: list[tuple[str, str]] = []
    if not seq:
        return out
    try:
        for item in seq:
            code = text(item, "CodeValue") or text(item, "LongCodeValue")
            out.append((code.upper(), text(item, "CodeMeaning")))
    except Exception:  # a malformed sequence is simply no evidence
        return []
    return out


def _text_fields(ds: Dataset) -> Iterator[tuple[str, str]]:
    for keyword in TEXT_KEYWORDS:
        if keyword.endswith("Sequence"):
            for _value, meaning in _code_items(ds, keyword):
                if meaning:
                    yield keyword, meaning
        else:
            found = text(ds, keyword)
            if found:
                yield keyword, found


def _skip(reason: str, message: str, **kw: Any) -> GateDecision:
    return GateDecision(False, reason, message, **kw)


# --------------------------------------------------------------------------------------
# The checks, in precedence order
# --------------------------------------------------------------------------------------


def _check_image(ds: Dataset, pixel: ImagePixel | None) -> GateDecision | None:
    if pixel is None:
        modality = text(ds, "Modality") or "unknown"
        return _skip(
            NOT_IMAGE,
            f"not an image: no Rows/Columns (Modality {modality}); nothing to analyse",
        )
    return None


def _chest_text_evidence(ds: Dataset) -> bool:
    for _kw, words in _text_fields(ds):
        toks = _tokens(words)
        if toks & CHEST_TERMS and not toks & OTHER_BODY_TERMS and not toks & OTHER_MODALITY_TERMS:
            return True
    return False


def _check_modality(ds: Dataset) -> tuple[GateDecision | None, list[str]]:
    from pydicom.uid import UID

    flags: list[str] = []
    sop = text(ds, "SOPClassUID")
    modality = text(ds, "Modality").upper()
    shown = modality or "missing"
    if sop in SECONDARY_CAPTURE_SOP:
        flags.append(FLAG_SECONDARY_CAPTURE)
        if modality in ACCEPTED_MODALITIES:
            return None, flags
        if modality in ("", "OT") and _chest_text_evidence(ds):
            return None, flags
        return (
            _skip(
                MODALITY,
                f"Secondary Capture (Modality {shown}) that does not say it is a chest radiograph "
                "(needs Modality CR/DX, or BodyPartExamined/descriptions naming the chest)",
            ),
            flags,
        )
    if sop and sop not in PROJECTION_CHEST_SOP:
        name = UID(sop).name if UID(sop).is_valid else ""
        if name and name != sop and "Storage" in name:
            return (
                _skip(
                    MODALITY,
                    f"{name.removesuffix(' SOP Class')} (Modality {shown}) is not a CR/DX radiograph",
                ),
                flags,
            )
    if modality in ACCEPTED_MODALITIES or (not modality and sop in PROJECTION_CHEST_SOP):
        if sop == DX_PROCESSING or text(ds, "PresentationIntentType").upper() == "FOR PROCESSING":
            flags.append(FLAG_FOR_PROCESSING)
        return None, flags
    what = f"Modality {modality}" if modality else "no Modality and a SOP class that is not CR/DX"
    return _skip(MODALITY, f"{what}: not a CR/DX radiograph; only projection radiographs are analysed"), flags


def _check_color(ds: Dataset, pixel: ImagePixel) -> GateDecision | None:
    pi = text(ds, "PhotometricInterpretation").upper()
    samples = pixel.samples_per_pixel
    if pi not in ("MONOCHROME1", "MONOCHROME2") or samples != 1:
        return _skip(
            COLOR,
            f"PhotometricInterpretation {pi or 'missing'} with {samples} sample(s) per pixel: "
            "only greyscale MONOCHROME1/2 radiographs are analysed",
        )
    return None


def _check_frames(ds: Dataset, pixel: ImagePixel) -> GateDecision | None:
    frames = pixel.frames
    if frames > 1:
        return _skip(MULTIFRAME, f"{frames} frames: only single-frame radiographs are analysed")
    return None


def _check_species(ds: Dataset) -> GateDecision | None:
    species = text(ds, "PatientSpeciesDescription").upper()
    if species and species not in HUMAN_SPECIES:
        return _skip(NOT_HUMAN, "PatientSpeciesDescription names a non-human species: veterinary image")
    for code, meaning in _code_items(ds, "PatientSpeciesCodeSequence"):
        if code not in HUMAN_CODES and meaning.upper() not in HUMAN_SPECIES:
            return _skip(NOT_HUMAN, "PatientSpeciesCodeSequence names a non-human species: veterinary image")
    if text(ds, "PatientBreedDescription") or value(ds, "PatientBreedCodeSequence"):
        return _skip(NOT_HUMAN, "the header names a breed (PatientBreed...): veterinary image")
    for keyword, words in _text_fields(ds):
        hit = sorted(_tokens(words) & SPECIES_TERMS)
        if hit:
            return _skip(NOT_HUMAN, f"{keyword} names an animal ({hit[0]}): veterinary image")
    return None


def _classify_body(ds: Dataset) -> tuple[str, str]:
    """Return (``"chest"`` | ``"other"`` | ``"unknown"``, evidence)."""
    bpe = text(ds, "BodyPartExamined")
    if bpe:
        toks = _tokens(bpe)
        term = next(iter(sorted(toks & OTHER_BODY_TERMS)), None)
        if term and not toks & CHEST_TERMS:
            return "other", f"BodyPartExamined:{term}"
        chest = next(iter(sorted(toks & CHEST_TERMS)), None)
        if chest and not term:
            return "chest", f"BodyPartExamined:{chest}"
    for code, meaning in _code_items(ds, "AnatomicRegionSequence"):
        if code in CHEST_CODES or _tokens(meaning) & CHEST_TERMS:
            return "chest", f"AnatomicRegionSequence:{code}"
        if code:
            return "other", f"AnatomicRegionSequence:{code}"
    for keyword, words in _text_fields(ds):
        if keyword == "BodyPartExamined":
            continue
        toks = _tokens(words)
        others, chests = toks & OTHER_BODY_TERMS, toks & CHEST_TERMS
        if others and not chests:
            return "other", f"{keyword}:{sorted(others)[0]}"
        if chests and not others:
            return "chest", f"{keyword}:{sorted(chests)[0]}"
    return "unknown", "none"


def _classify_view(ds: Dataset) -> tuple[str, str]:
    """Return (``"frontal"`` | ``"other"`` | ``"unknown"``, evidence)."""
    vp = text(ds, "ViewPosition").upper()
    if vp:
        toks = _tokens(vp)
        if toks & NON_FRONTAL_TERMS:
            return "other", f"ViewPosition:{vp}"
        if toks & FRONTAL_TERMS:
            return "frontal", f"ViewPosition:{vp}"
    for code, meaning in _code_items(ds, "ViewCodeSequence"):
        toks = _tokens(meaning)
        if code in NON_FRONTAL_CODES or toks & NON_FRONTAL_TERMS:
            return "other", f"ViewCodeSequence:{code or 'meaning'}"
        if code in FRONTAL_CODES or toks & FRONTAL_TERMS:
            return "frontal", f"ViewCodeSequence:{code or 'meaning'}"
    texts = [(kw, _tokens(t)) for kw, t in _text_fields(ds)]
    for keyword, toks in texts:
        non, front = toks & TEXT_NON_FRONTAL_TERMS, toks & FRONTAL_TERMS
        if non and not front:
            return "other", f"{keyword}:{sorted(non)[0]}"
    orientation = _patient_orientation_view(ds)
    if orientation is not None:
        return orientation
    for keyword, toks in texts:
        non, front = toks & TEXT_NON_FRONTAL_TERMS, toks & FRONTAL_TERMS
        if front and not non:
            return "frontal", f"{keyword}:{sorted(front)[0]}"
    if text(ds, "ImageLaterality").upper() == "B":
        return "frontal", "ImageLaterality:B"
    return "unknown", "none"


def _patient_orientation_view(ds: Dataset) -> tuple[str, str] | None:
    raw = value(ds, "PatientOrientation")
    if not raw:
        return None
    parts = [p.strip().upper() for p in (raw if not isinstance(raw, str) else raw.split("\\"))]
    parts = [str(p) for p in parts if p]
    if len(parts) != 2 or not all(re.fullmatch(r"[LRAPHF]+", p) for p in parts):
        return None
    axes = {p[0] for p in parts}
    shown = "\\".join(parts)
    lr, ap, hf = bool(axes & {"L", "R"}), bool(axes & {"A", "P"}), bool(axes & {"H", "F"})
    if lr and hf:
        return "frontal", f"PatientOrientation:{shown}"
    if (ap and hf) or (lr and ap):
        return "other", f"PatientOrientation:{shown}"
    return None


def gate_header(ds: Dataset, *, limits: IngestLimits | None = None) -> GateDecision:
    """Decide from the header alone whether ``ds`` is an image this toolkit analyses.

    Never touches the pixel data. Checks run in the order of
    :data:`REASON_PRECEDENCE`.

    Parameters
    ----------
    ds
        Dataset, at least its header.
    limits
        Caps for :func:`~chexnet_dicom.dicom.read.check_header_caps`; defaults when None.

    Returns
    -------
    GateDecision
    """
    try:
        check_header_caps(ds, limits)
    except InputError as exc:
        return _skip(exc.reason, str(exc))
    pixel = image_pixel(ds)  # validated by the header caps above
    decision = _check_image(ds, pixel)
    if decision:
        return decision
    assert pixel is not None
    decision, flags = _check_modality(ds)
    if decision:
        return decision
    decision = _check_color(ds, pixel) or _check_frames(ds, pixel) or _check_species(ds)
    if decision:
        return decision
    body, body_evidence = _classify_body(ds)
    if body == "other":
        return _skip(
            BODY_PART,
            f"body part is not the chest ({body_evidence})",
            body_part_evidence=body_evidence,
        )
    if body == "unknown":
        flags.append(FLAG_BODY_PART_UNKNOWN)
    view, view_evidence = _classify_view(ds)
    if view == "other":
        return _skip(
            VIEW_NOT_FRONTAL,
            f"not a frontal view ({view_evidence}); only PA/AP chest radiographs are analysed",
            view_evidence=view_evidence,
            body_part_evidence=body_evidence,
        )
    if view == "unknown":
        flags.append(FLAG_VIEW_UNKNOWN)
    meta = getattr(ds, "file_meta", None)
    ts = text(meta, "TransferSyntaxUID") if meta is not None else ""
    if ts and not codec_supported(ts):
        from pydicom.uid import UID

        name = TS_NAMES.get(ts) or UID(ts).name
        shown = ts if name == ts else f"{name} ({ts})"
        return _skip(
            UNSUPPORTED_CODEC,
            f"no installed decoder for transfer syntax {shown}; convert the file "
            "(for example with gdcmconv --raw) or install a decoder",
            view_evidence=view_evidence,
            body_part_evidence=body_evidence,
        )
    modality = text(ds, "Modality").upper() or "CR/DX"
    message = f"frontal chest radiograph ({modality}; view {view_evidence}; body part {body_evidence})"
    return GateDecision(True, None, message, tuple(flags), view_evidence, body_evidence)
