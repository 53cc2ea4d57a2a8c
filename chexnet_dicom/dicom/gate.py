"""Acceptance gate: is this a single-frame frontal chest radiograph we can analyse?

:func:`gate_header` decides from the header alone (it never touches pixel data);
:func:`check_file` reads a file safely, gates it and, for accepted files, decodes the
display image the model sees, so that pixel errors exist only for files that passed the
header gate.

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
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydicom.dataset import Dataset

from chexnet_dicom.config import IngestConfig, IngestLimits
from chexnet_dicom.dicom.read import check_header_caps, codec_supported, read_dataset
from chexnet_dicom.errors import InputError

__all__ = [
    "NOT_DICOM",
    "CORRUPT_HEADER",
    "TOO_LARGE",
    "NOT_IMAGE",
    "MODALITY",
    "COLOR",
    "MULTIFRAME",
    "NOT_HUMAN",
    "BODY_PART",
    "VIEW_NOT_FRONTAL",
    "UNSUPPORTED_CODEC",
    "CORRUPT_PIXELS",
    "INTERNAL",
    "REASON_PRECEDENCE",
    "ERROR_REASONS",
    "FLAG_VIEW_UNKNOWN",
    "FLAG_BODY_PART_UNKNOWN",
    "FLAG_SECONDARY_CAPTURE",
    "FLAG_FOR_PROCESSING",
    "CHECK_TARGET_SIZE",
    "GateDecision",
    "CheckResult",
    "gate_header",
    "check_file",
    "iter_files",
]

logger = logging.getLogger(__name__)

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
#: Not a gate reason: an unexpected failure (a bug) reported by the CLI for one file.
INTERNAL = "INTERNAL"

#: The order in which the checks run; the first failing check gives the reason.
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

#: Reasons that mean the file is defective (status ``error``), not merely out of scope.
ERROR_REASONS = frozenset({NOT_DICOM, CORRUPT_HEADER, TOO_LARGE, CORRUPT_PIXELS, INTERNAL})

FLAG_VIEW_UNKNOWN = "view-unknown"
FLAG_BODY_PART_UNKNOWN = "body-part-unknown"
FLAG_SECONDARY_CAPTURE = "secondary-capture"
FLAG_FOR_PROCESSING = "for-processing"

#: Smallest side :func:`check_file` decodes to by default: the largest model input the
#: toolkit uses (resize 256, then crop 224), so check decodes as inference does.
CHECK_TARGET_SIZE = 256

# --------------------------------------------------------------------------------------
# Vocabularies (upper case tokens after removing hyphens: "C-SPINE" -> "CSPINE")
# --------------------------------------------------------------------------------------

_CR = "1.2.840.10008.5.1.4.1.1.1"
_DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
_DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
_PROJECTION_CHEST_SOP = frozenset({_CR, _DX_PRESENTATION, _DX_PROCESSING})
_SECONDARY_CAPTURE_SOP = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)
_ACCEPTED_MODALITIES = frozenset({"CR", "DX"})
# Transfer syntaxes newer than pydicom 3.0's UID dictionary.
_TS_NAMES = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
}

_CHEST_TERMS = frozenset(
    {"CHEST", "THORAX", "TORAX", "TORACE", "THORAKS", "LUNG", "LUNGS", "CXR", "PECHO", "POUMON", "POUMONS"}
)
_OTHER_BODY_TERMS = frozenset(
    {
        "SKULL",
        "HEAD",
        "BRAIN",
        "NECK",
        "FACE",
        "FACIAL",
        "ORBIT",
        "ORBITS",
        "SINUS",
        "SINUSES",
        "JAW",
        "MANDIBLE",
        "TEETH",
        "TOOTH",
        "DENTAL",
        "SPINE",
        "CSPINE",
        "TSPINE",
        "LSPINE",
        "CERVICAL",
        "LUMBAR",
        "SACRUM",
        "COCCYX",
        "SACROILIAC",
        "PELVIS",
        "HIP",
        "HIPS",
        "FEMUR",
        "KNEE",
        "KNEES",
        "PATELLA",
        "TIBIA",
        "FIBULA",
        "LEG",
        "LEGS",
        "ANKLE",
        "FOOT",
        "FEET",
        "TOE",
        "TOES",
        "HEEL",
        "CALCANEUS",
        "SHOULDER",
        "CLAVICLE",
        "SCAPULA",
        "HUMERUS",
        "ELBOW",
        "FOREARM",
        "ARM",
        "WRIST",
        "HAND",
        "HANDS",
        "FINGER",
        "FINGERS",
        "THUMB",
        "ABDOMEN",
        "ABD",
        "KUB",
        "BREAST",
        "MAMMO",
        "MAMMOGRAPHY",
        "EXTREMITY",
        "EXTREMITIES",
        "CHESTABDOMEN",
        "CHESTABDPELVIS",
        "ABDOMENPELVIS",
        "BONEAGE",
        "WHOLEBODY",
    }
)
_FRONTAL_TERMS = frozenset({"PA", "AP", "FRONTAL", "POSTEROANTERIOR", "ANTEROPOSTERIOR"})
_NON_FRONTAL_TERMS = frozenset(
    {
        "LAT",
        "LATERAL",
        "LATERALE",
        "LL",
        "RL",
        "LLAT",
        "RLAT",
        "LATL",
        "LATR",
        "OBL",
        "OBLIQUE",
        "RAO",
        "LAO",
        "RPO",
        "LPO",
        "LLO",
        "RLO",
        "DECUB",
        "DECUBITUS",
        "LLD",
        "RLD",
        "LORDOTIC",
        "AXIAL",
        "TANGENTIAL",
        "PROFIL",
        "SEITLICH",
    }
)
# In free text, two-letter LL/RL are too often "left/right lower (lobe)": only the coded
# ViewPosition uses them.
_TEXT_NON_FRONTAL_TERMS = _NON_FRONTAL_TERMS - {"LL", "RL"}
_SPECIES_TERMS = frozenset(
    {
        "CANINE",
        "FELINE",
        "EQUINE",
        "BOVINE",
        "PORCINE",
        "OVINE",
        "CAPRINE",
        "AVIAN",
        "MURINE",
        "LEPORINE",
        "DOG",
        "CAT",
        "HORSE",
        "COW",
        "PIG",
        "SHEEP",
        "GOAT",
        "RABBIT",
        "VETERINARY",
    }
)
_HUMAN_SPECIES = frozenset({"HOMO SAPIENS", "HUMAN", "HOMOSAPIENS"})
_OTHER_MODALITY_TERMS = frozenset(
    {"CT", "CTA", "MR", "MRI", "US", "ULTRASOUND", "PET", "NM", "SPECT", "ECHO"}
)

# Coded views (SNOMED CT and the legacy SNOMED-RT/DICOM codes of CID 4010 / 4014).
_FRONTAL_CODES = frozenset({"399348003", "399214001", "272479007", "399033003", "R-10206", "R-10214"})
_NON_FRONTAL_CODES = frozenset(
    {
        "399173006",
        "399198007",
        "399067008",
        "49370004",
        "102536004",
        "102535000",
        "399312000",
        "399160007",
        "R-10236",
        "R-10232",
        "R-10202",
        "R-10204",
    }
)
_CHEST_CODES = frozenset({"816094009", "43799004", "51185008", "T-D3000", "T-32000"})
_HUMAN_CODES = frozenset({"337915000", "L-85B00"})

# Text attributes weighed for body part and view, in order of specificity (instance and
# series level before study and request level).
_TEXT_KEYWORDS = (
    "SeriesDescription",
    "AcquisitionDeviceProcessingDescription",
    "ProtocolName",
    "PerformedProtocolCodeSequence",
    "BodyPartExamined",
    "StudyDescription",
    "RequestedProcedureDescription",
)


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


Status = Literal["accepted", "skipped", "error"]


@dataclass(frozen=True)
class CheckResult:
    """Outcome of :func:`check_file` for one file.

    Attributes
    ----------
    path
        The path as given.
    status
        ``"accepted"``, ``"skipped"`` (out of scope, header only) or ``"error"``
        (defective file or pixel data).
    reason
        Reason code, None when accepted.
    message
        Human readable explanation (no PHI).
    flags
        Gate flags plus, after decoding, the pixel provenance flags.
    view_evidence
        See :attr:`GateDecision.view_evidence`.
    decode_path
        How the pixels were decoded (``"full"``, ``"j2k-reduce-4"``, ...), ``""`` when
        they were not.
    """

    path: str
    status: Status
    reason: str | None
    message: str
    flags: tuple[str, ...] = ()
    view_evidence: str = ""
    decode_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (flags as a list)."""
        return {
            "path": self.path,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "flags": list(self.flags),
            "view_evidence": self.view_evidence,
            "decode_path": self.decode_path,
        }


# --------------------------------------------------------------------------------------
# Header helpers
# --------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return " ".join(str(v) for v in value)
    return str(value)


def _get(ds: Dataset, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except Exception:  # a value pydicom cannot convert is simply no evidence
        return None


def _tokens(text: str) -> set[str]:
    text = re.sub(r"(?<=[A-Za-z])[-'](?=[A-Za-z])", "", text.upper())
    return {t for t in re.split(r"[^A-Z0-9]+", text) if t}


def _code_items(ds: Dataset, keyword: str) -> list[tuple[str, str]]:
    seq = _get(ds, keyword)
    out: list[tuple[str, str]] = []
    if not seq:
        return out
    try:
        for item in seq:
            value = _text(getattr(item, "CodeValue", "") or getattr(item, "LongCodeValue", ""))
            meaning = _text(getattr(item, "CodeMeaning", ""))
            out.append((value.strip().upper(), meaning))
    except Exception:
        return []
    return out


def _text_fields(ds: Dataset) -> Iterator[tuple[str, str]]:
    for keyword in _TEXT_KEYWORDS:
        if keyword.endswith("Sequence"):
            for _value, meaning in _code_items(ds, keyword):
                if meaning:
                    yield keyword, meaning
        else:
            text = _text(_get(ds, keyword))
            if text.strip():
                yield keyword, text


def _int(ds: Dataset, keyword: str, default: int) -> int:
    value = _get(ds, keyword)
    if value in (None, ""):
        return default
    try:
        return int(str(value).strip())
    except ValueError:
        return default


def _skip(reason: str, message: str, **kw: Any) -> GateDecision:
    return GateDecision(False, reason, message, **kw)


# --------------------------------------------------------------------------------------
# The checks, in precedence order
# --------------------------------------------------------------------------------------


def _check_image(ds: Dataset) -> GateDecision | None:
    rows, cols = _get(ds, "Rows"), _get(ds, "Columns")
    if rows in (None, "") or cols in (None, ""):
        modality = _text(_get(ds, "Modality")).strip() or "unknown"
        return _skip(
            NOT_IMAGE,
            f"not an image: no Rows/Columns (Modality {modality}); nothing to analyse",
        )
    if _int(ds, "Rows", 0) == 0 or _int(ds, "Columns", 0) == 0:
        return _skip(CORRUPT_HEADER, "Rows or Columns is 0: the image matrix is empty; fix the header")
    return None


def _chest_text_evidence(ds: Dataset) -> bool:
    for _kw, text in _text_fields(ds):
        toks = _tokens(text)
        if toks & _CHEST_TERMS and not toks & _OTHER_BODY_TERMS and not toks & _OTHER_MODALITY_TERMS:
            return True
    return False


def _check_modality(ds: Dataset) -> tuple[GateDecision | None, list[str]]:
    from pydicom.uid import UID

    flags: list[str] = []
    sop = _text(_get(ds, "SOPClassUID")).strip()
    modality = _text(_get(ds, "Modality")).strip().upper()
    shown = modality or "missing"
    if sop in _SECONDARY_CAPTURE_SOP:
        flags.append(FLAG_SECONDARY_CAPTURE)
        if modality in _ACCEPTED_MODALITIES:
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
    if sop and sop not in _PROJECTION_CHEST_SOP:
        name = UID(sop).name if UID(sop).is_valid else ""
        if name and name != sop and "Storage" in name:
            return (
                _skip(
                    MODALITY,
                    f"{name.removesuffix(' SOP Class')} (Modality {shown}) is not a CR/DX radiograph",
                ),
                flags,
            )
    if modality in _ACCEPTED_MODALITIES or (not modality and sop in _PROJECTION_CHEST_SOP):
        if sop == _DX_PROCESSING or _text(_get(ds, "PresentationIntentType")).upper() == "FOR PROCESSING":
            flags.append(FLAG_FOR_PROCESSING)
        return None, flags
    what = f"Modality {modality}" if modality else "no Modality and a SOP class that is not CR/DX"
    return _skip(MODALITY, f"{what}: not a CR/DX radiograph; only projection radiographs are analysed"), flags


def _check_color(ds: Dataset) -> GateDecision | None:
    pi = _text(_get(ds, "PhotometricInterpretation")).strip().upper()
    samples = _int(ds, "SamplesPerPixel", 1)
    if pi not in ("MONOCHROME1", "MONOCHROME2") or samples != 1:
        return _skip(
            COLOR,
            f"PhotometricInterpretation {pi or 'missing'} with {samples} sample(s) per pixel: "
            "only greyscale MONOCHROME1/2 radiographs are analysed",
        )
    return None


def _check_frames(ds: Dataset) -> GateDecision | None:
    frames = _int(ds, "NumberOfFrames", 1)
    if frames > 1:
        return _skip(MULTIFRAME, f"{frames} frames: only single-frame radiographs are analysed")
    return None


def _check_species(ds: Dataset) -> GateDecision | None:
    species = _text(_get(ds, "PatientSpeciesDescription")).strip().upper()
    if species and species not in _HUMAN_SPECIES:
        return _skip(NOT_HUMAN, "PatientSpeciesDescription names a non-human species: veterinary image")
    for value, meaning in _code_items(ds, "PatientSpeciesCodeSequence"):
        if value not in _HUMAN_CODES and meaning.upper() not in _HUMAN_SPECIES:
            return _skip(NOT_HUMAN, "PatientSpeciesCodeSequence names a non-human species: veterinary image")
    if _text(_get(ds, "PatientBreedDescription")).strip() or _get(ds, "PatientBreedCodeSequence"):
        return _skip(NOT_HUMAN, "the header names a breed (PatientBreed...): veterinary image")
    for keyword, text in _text_fields(ds):
        hit = sorted(_tokens(text) & _SPECIES_TERMS)
        if hit:
            return _skip(NOT_HUMAN, f"{keyword} names an animal ({hit[0]}): veterinary image")
    return None


def _classify_body(ds: Dataset) -> tuple[str, str]:
    """Return (``"chest"`` | ``"other"`` | ``"unknown"``, evidence)."""
    bpe = _text(_get(ds, "BodyPartExamined")).strip()
    if bpe:
        toks = _tokens(bpe)
        term = next(iter(sorted(toks & _OTHER_BODY_TERMS)), None)
        if term and not toks & _CHEST_TERMS:
            return "other", f"BodyPartExamined:{term}"
        chest = next(iter(sorted(toks & _CHEST_TERMS)), None)
        if chest and not term:
            return "chest", f"BodyPartExamined:{chest}"
    for value, meaning in _code_items(ds, "AnatomicRegionSequence"):
        if value in _CHEST_CODES or _tokens(meaning) & _CHEST_TERMS:
            return "chest", f"AnatomicRegionSequence:{value}"
        if value:
            return "other", f"AnatomicRegionSequence:{value}"
    for keyword, text in _text_fields(ds):
        if keyword == "BodyPartExamined":
            continue
        toks = _tokens(text)
        others, chests = toks & _OTHER_BODY_TERMS, toks & _CHEST_TERMS
        if others and not chests:
            return "other", f"{keyword}:{sorted(others)[0]}"
        if chests and not others:
            return "chest", f"{keyword}:{sorted(chests)[0]}"
    return "unknown", "none"


def _classify_view(ds: Dataset) -> tuple[str, str]:
    """Return (``"frontal"`` | ``"other"`` | ``"unknown"``, evidence)."""
    vp = _text(_get(ds, "ViewPosition")).strip().upper()
    if vp:
        toks = _tokens(vp)
        if toks & _NON_FRONTAL_TERMS:
            return "other", f"ViewPosition:{vp}"
        if toks & _FRONTAL_TERMS:
            return "frontal", f"ViewPosition:{vp}"
    for value, meaning in _code_items(ds, "ViewCodeSequence"):
        toks = _tokens(meaning)
        if value in _NON_FRONTAL_CODES or toks & _NON_FRONTAL_TERMS:
            return "other", f"ViewCodeSequence:{value or 'meaning'}"
        if value in _FRONTAL_CODES or toks & _FRONTAL_TERMS:
            return "frontal", f"ViewCodeSequence:{value or 'meaning'}"
    texts = [(kw, _tokens(t)) for kw, t in _text_fields(ds)]
    for keyword, toks in texts:
        non, front = toks & _TEXT_NON_FRONTAL_TERMS, toks & _FRONTAL_TERMS
        if non and not front:
            return "other", f"{keyword}:{sorted(non)[0]}"
    orientation = _patient_orientation_view(ds)
    if orientation is not None:
        return orientation
    for keyword, toks in texts:
        non, front = toks & _TEXT_NON_FRONTAL_TERMS, toks & _FRONTAL_TERMS
        if front and not non:
            return "frontal", f"{keyword}:{sorted(front)[0]}"
    if _text(_get(ds, "ImageLaterality")).strip().upper() == "B":
        return "frontal", "ImageLaterality:B"
    return "unknown", "none"


def _patient_orientation_view(ds: Dataset) -> tuple[str, str] | None:
    value = _get(ds, "PatientOrientation")
    if not value:
        return None
    parts = [p.strip().upper() for p in (value if not isinstance(value, str) else value.split("\\"))]
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
    decision = _check_image(ds)
    if decision:
        return decision
    decision, flags = _check_modality(ds)
    if decision:
        return decision
    for check in (_check_color, _check_frames, _check_species):
        decision = check(ds)
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
    ts = _text(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "").strip()
    if ts and not codec_supported(ts):
        from pydicom.uid import UID

        name = _TS_NAMES.get(ts) or UID(ts).name
        shown = ts if name == ts else f"{name} ({ts})"
        return _skip(
            UNSUPPORTED_CODEC,
            f"no installed decoder for transfer syntax {shown}; convert the file "
            "(for example with gdcmconv --raw) or install a decoder",
            view_evidence=view_evidence,
            body_part_evidence=body_evidence,
        )
    modality = _text(_get(ds, "Modality")).strip().upper() or "CR/DX"
    message = f"frontal chest radiograph ({modality}; view {view_evidence}; body part {body_evidence})"
    return GateDecision(True, None, message, tuple(flags), view_evidence, body_evidence)


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def _status_for(reason: str) -> Status:
    return "error" if reason in ERROR_REASONS else "skipped"


def check_file(
    path: str | os.PathLike[str],
    *,
    config: IngestConfig | None = None,
    decode: bool = True,
    target_size: int | None = CHECK_TARGET_SIZE,
) -> CheckResult:
    """Read, gate and (for accepted files) decode one file.

    Parameters
    ----------
    path
        The file.
    config
        Limits and pixel policy; defaults when None.
    decode
        Decode the display image of accepted files, so that corrupt pixel data is found.
    target_size
        Smallest side to decode to (the fast path may decode a reduced resolution);
        None decodes at full resolution.

    Returns
    -------
    CheckResult
        Never raises for a bad input: every :class:`~chexnet_dicom.errors.InputError`
        becomes ``status="error"`` with its reason code.
    """
    cfg = config or IngestConfig()
    shown = str(path)
    try:
        ds = read_dataset(path, limits=cfg.limits, stop_before_pixels=True)
    except InputError as exc:
        return CheckResult(shown, "error", exc.reason, str(exc))
    decision = gate_header(ds, limits=cfg.limits)
    if not decision.accepted:
        reason = decision.reason or INTERNAL
        return CheckResult(
            shown, _status_for(reason), reason, decision.message, decision.flags, decision.view_evidence
        )
    if not decode:
        return CheckResult(
            shown,
            "accepted",
            None,
            decision.message + "; pixels not decoded",
            decision.flags,
            decision.view_evidence,
        )
    try:
        flags, decode_path, detail = _decode(path, cfg, target_size)
    except InputError as exc:
        return CheckResult(shown, "error", exc.reason, str(exc), decision.flags, decision.view_evidence)
    merged = tuple(dict.fromkeys((*decision.flags, *flags)))
    return CheckResult(
        shown, "accepted", None, f"{decision.message}; {detail}", merged, decision.view_evidence, decode_path
    )


def _decode(
    path: str | os.PathLike[str], cfg: IngestConfig, target_size: int | None
) -> tuple[list[str], str, str]:
    """Decode the display image; return (provenance flags, decode path, summary)."""
    try:
        from chexnet_dicom.dicom import pixels
    except ImportError:  # pixels.py not in this build: at least decode the stored values
        pixels = None  # type: ignore[assignment]
    if pixels is not None and hasattr(pixels, "load_display"):
        image = pixels.load_display(path, config=cfg, target_size=target_size)
        prov = dict(getattr(image, "provenance", {}) or {})
        flags = [str(f) for f in prov.get("flags", [])]
        decode_path = str(prov.get("decode_path", ""))
        h, w = image.image.shape[:2]
        return flags, decode_path, f"display image {h}x{w} ({decode_path or 'decoded'})"
    from chexnet_dicom.dicom.decode import decode_stored

    ds = read_dataset(path, limits=cfg.limits)
    stored = decode_stored(ds, limits=cfg.limits, target_size=target_size, fast_path=cfg.pixels.fast_path)
    h, w = stored.array.shape[:2]
    return [], stored.path, f"stored pixels {h}x{w} ({stored.path})"


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[str]:
    """Yield the files named by ``paths``, recursing into folders in sorted order.

    Parameters
    ----------
    paths
        Files and folders, in the order given.

    Yields
    ------
    str
        File paths; folders are walked depth-first with entries sorted by name, hidden
        entries (starting with ``.``) skipped, symbolic links to folders not followed.
    """
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield os.path.join(root, name)
        else:
            yield str(p)
