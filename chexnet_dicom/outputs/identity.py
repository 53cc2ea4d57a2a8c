"""Who made a result and how it is named: constants, the card protocol and deterministic UIDs.

UIDs
    Every UID an output carries is :func:`chexnet_dicom.dicom.uids.derive_uid` of
    ``("chexnet-dicom", <kind>, <weights sha256>, <source UIDs...>)``: running the same
    model on the same instances gives the same UIDs (a retry never duplicates), other
    weights or other instances give other UIDs. Series UIDs depend on the study and the
    weights only, so a later version of a study's SR lands in the same series.

Series numbers
    Fixed per output kind (:data:`SERIES_NUMBERS`), never random.

Values the source holds but a result cannot
    A copied patient/study value that is invalid for its VR in every encoding (966_fixed's
    56-character AccessionNumber, where SH holds 16) is left empty or out of the result
    (:func:`chexnet_dicom.outputs.header.sanitize_copied`).  The result then says so in
    the standard place, the SOP Common module's **Original Attributes Sequence**
    (0400,0561), as :func:`record_left_out` writes it: one item per attribute with the time of
    analysis (Attribute Modification DateTime), this package as Modifying System,
    Reason for the Attribute Modification ``CORRECT`` (PS3.3 C.12.1 defined term:
    "replace incorrect values"), Source of Previous Values empty (type 2: the source
    instance is the result's evidence), a Modified Attributes Sequence item holding the
    attribute empty (its previous value cannot be encoded in its VR), and a
    **Nonconforming Modified Attributes Sequence** (0400,0551) of one item (``dciodvfy``
    requires exactly one) with its tag (Selector Attribute, Selector Value Number 0: all values) and the source's
    value as bytes (Nonconforming Data Element Value (0400,0552), OB).  A reader gets the
    original AccessionNumber back byte for byte; ``dciodvfy`` and PixelMed accept it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

import pydicom.config
from pydicom.charset import convert_encodings, encode_string
from pydicom.datadict import dictionary_VM
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import UID
from pydicom.valuerep import PersonName, validate_value

from chexnet_dicom import __version__
from chexnet_dicom.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, derive_uid
from chexnet_dicom.errors import OutputError

if TYPE_CHECKING:
    from chexnet_dicom.model.card import OperatingPoint

__all__ = [
    "MANUFACTURER",
    "RESEARCH_USE_ONLY",
    "SERIES_DESCRIPTIONS",
    "SERIES_NUMBERS",
    "COPIED_IDENTITY",
    "CardLike",
    "finalize_file_meta",
    "left_out_of",
    "record_left_out",
    "output_uid",
    "series_uid",
    "software_versions",
    "sorted_uids",
]

_DS = TypeVar("_DS", bound=Dataset)

#: Manufacturer written into every output and its contributing equipment item.
MANUFACTURER = "chexnet-dicom project"
#: Text that every output carries (series description, SC legend, SR text).
RESEARCH_USE_ONLY = "RESEARCH USE ONLY"
#: Fixed series numbers per output kind.
SERIES_NUMBERS: dict[str, int] = {"sr": 9901, "sc": 9902}
#: Series descriptions (LO, at most 64 characters) per output kind.
SERIES_DESCRIPTIONS: dict[str, str] = {
    "sr": "CheXNet AI findings - RESEARCH USE ONLY",
    "sc": "CheXNet AI heatmap overlay - RESEARCH USE ONLY",
}


class CardLike(Protocol):
    """What the outputs need of a :class:`chexnet_dicom.model.card.ModelCard`.

    Declared as a protocol so that this layer never imports torch.
    """

    @property
    def name(self) -> str:
        """Algorithm name."""

    @property
    def version(self) -> str:
        """Algorithm version."""

    @property
    def weights_sha256(self) -> str:
        """sha256 of the weights file."""

    @property
    def cam_threshold(self) -> float:
        """Heatmap level (fixed model scale) that delimits a reported region."""

    @property
    def intended_use(self) -> str:
        """Plain-language intended use."""

    @property
    def device_uid(self) -> str:
        """Device UID derived from the weights hash."""

    @property
    def operating_points(self) -> dict[str, OperatingPoint]:
        """Per-finding operating points."""

    def threshold(self, label: str) -> float:
        """Operating point of a finding."""


def output_uid(kind: str, weights_sha256: str, *parts: str) -> str:
    """Return the deterministic UID of an output object.

    Parameters
    ----------
    kind
        Output kind and role, for example ``"sr"``, ``"sc"``, ``"tracking"``.
    weights_sha256
        sha256 of the weights that produced the result.
    *parts
        Source identifiers (SOP Instance UIDs, finding names).

    Returns
    -------
    str
        A ``2.25.`` UID.
    """
    if not weights_sha256:
        raise OutputError("the model card has no weights_sha256; deterministic result UIDs need it")
    return derive_uid("chexnet-dicom", kind, weights_sha256, *parts)


def series_uid(kind: str, study_instance_uid: str, weights_sha256: str) -> str:
    """Return the deterministic Series Instance UID of an output kind in a study."""
    return output_uid(f"{kind}-series", weights_sha256, str(study_instance_uid))


def finalize_file_meta(ds: _DS) -> _DS:
    """Set this package's Implementation Class UID and Version Name on ``ds``."""
    ds.file_meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return ds


def software_versions(card: CardLike) -> list[str]:
    """Software Versions values: the model version and this package's version."""
    return [str(card.version)[:64], f"chexnet-dicom {__version__}"]


def sorted_uids(datasets: Sequence[Dataset]) -> list[str]:
    """SOP Instance UIDs of ``datasets``, sorted (order-independent derivations)."""
    return sorted(str(ds.SOPInstanceUID) for ds in datasets)


#: Patient / study attributes a result copies from its source (Patient, General Study and
#: Patient Study modules); :func:`record_left_out` checks them.
COPIED_IDENTITY: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDs",
    "PatientComments",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "EthnicGroup",
    "AdmittingDiagnosesDescription",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "ReferringPhysicianName",
)


def _text(value: object) -> str | None:
    if value is None:
        return None
    values = list(value) if isinstance(value, MultiValue) else [value]
    text = "\\".join(str(v) for v in values)
    return text if text.strip(" \x00") else None


#: Control characters no copied value may hold (C0 except ESC and the free-text line breaks, DEL, C1).
_CONTROLS = re.compile("[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f-\x9f]")


def _invalid(source: Dataset, keyword: str) -> bool:
    """Whether the source's value of ``keyword`` breaks its VR (length, form, VM, control characters)."""
    elem = source[keyword]
    values = list(elem.value) if isinstance(elem.value, MultiValue) else [elem.value]
    if len(values) > 1 and str(dictionary_VM(elem.tag)) == "1":
        return True
    for v in values:
        if isinstance(v, (str, PersonName)):
            if _CONTROLS.search(str(v)):
                return True
            try:
                validate_value(elem.VR, str(v), pydicom.config.RAISE)
            except (ValueError, TypeError):
                return True
    return False


def left_out_of(result: Dataset, source: Dataset) -> list[str]:
    """Keywords of :data:`COPIED_IDENTITY` whose source value breaks its VR and that ``result`` holds empty or not at all.

    A valid source value a result does not copy (an optional attribute outside its IOD)
    is not a modification and is not listed.
    """
    return [
        kw
        for kw in COPIED_IDENTITY
        if _text(source.get(kw)) is not None and _text(result.get(kw)) is None and _invalid(source, kw)
    ]


def _source_bytes(source: Dataset, keyword: str) -> bytes:
    """The source's value of ``keyword`` as bytes in its character set, padded to even length."""
    text = _text(source.get(keyword)) or ""
    try:
        raw = encode_string(text, convert_encodings(source.get("SpecificCharacterSet") or "ISO_IR 6"))
    except (LookupError, ValueError, UnicodeError):
        raw = text.encode("utf-8")
    return raw + b" " if len(raw) % 2 else raw


def record_left_out(result: Dataset, source: Dataset, card: CardLike) -> list[str]:
    """Record in ``result`` the source's patient/study values it could not keep (see the module docstring).

    Parameters
    ----------
    result
        A built SR or SC (after :func:`chexnet_dicom.outputs.header.sanitize_copied`),
        changed in place: an Original Attributes Sequence item is added when a value
        was left out.  Its ContentDate/ContentTime date the modification.
    source
        The source instance whose Patient and Study modules the result copied.
    card
        The model card (its name and version name the modifying system).

    Returns
    -------
    list of str
        The keywords recorded (never values: PHI).
    """
    keywords = left_out_of(result, source)
    if not keywords:
        return []
    when = f"{result.get('ContentDate', '')}{result.get('ContentTime', '')}"
    items = []
    for kw in keywords:  # one item per attribute: its Nonconforming Modified Attributes Sequence holds one
        modified = Dataset()
        setattr(modified, kw, None)  # its previous value cannot be encoded in its VR: below, as bytes
        entry = Dataset()
        entry.SelectorAttribute = Tag(kw)
        entry.SelectorValueNumber = 0
        entry.NonconformingDataElementValue = _source_bytes(source, kw)
        item = Dataset()
        item.ModifiedAttributesSequence = DicomSequence([modified])
        item.NonconformingModifiedAttributesSequence = DicomSequence([entry])
        item.AttributeModificationDateTime = when or None
        item.ModifyingSystem = f"chexnet-dicom {__version__} ({card.name} {card.version})"[:64]
        item.SourceOfPreviousValues = None
        item.ReasonForTheAttributeModification = "CORRECT"
        items.append(item)
    if "OriginalAttributesSequence" in result:
        result.OriginalAttributesSequence.extend(items)
    else:
        result.OriginalAttributesSequence = DicomSequence(items)
    return keywords
