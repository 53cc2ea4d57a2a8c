"""Shared pieces of the DICOM results: identity constants, deterministic UIDs, inputs.

UIDs
    Every UID an output carries is :func:`chexnet_dicom.dicom.uids.derive_uid` of
    ``("chexnet-dicom", <kind>, <weights sha256>, <source UIDs...>)``: running the same
    model on the same instances gives the same UIDs (a retry never duplicates), other
    weights or other instances give other UIDs. Series UIDs depend on the study and the
    weights only, so a later version of a study's SR lands in the same series.

Series numbers
    Fixed per output kind (:data:`SERIES_NUMBERS`), never random.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np
import pydicom
import pydicom.charset
import pydicom.config
from pydicom.datadict import dictionary_VM
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import PersonName, validate_value

from chexnet_dicom import __version__
from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, derive_uid
from chexnet_dicom.errors import OutputError
from chexnet_dicom.model.labels import LABELS, NUM_CLASSES
from chexnet_dicom.model.result import Prediction

if TYPE_CHECKING:
    from chexnet_dicom.model.card import OperatingPoint

__all__ = [
    "MANUFACTURER",
    "RESEARCH_USE_ONLY",
    "SERIES_DESCRIPTIONS",
    "SERIES_NUMBERS",
    "CardLike",
    "ImageResult",
    "SkippedInstance",
    "evidence_header",
    "finalize_file_meta",
    "output_uid",
    "quiet_highdicom",
    "settle_character_set",
    "sanitize_copied",
    "series_uid",
    "write_dataset",
]

logger = logging.getLogger(__name__)

_DS = TypeVar("_DS", bound=Dataset)

#: Manufacturer written into every output and its contributing equipment item.
MANUFACTURER = "chexnet-dicom project"
#: Text that every output carries (series description, SC legend, SR text).
RESEARCH_USE_ONLY = "RESEARCH USE ONLY"
#: Fixed series numbers per output kind.
SERIES_NUMBERS: dict[str, int] = {"sr": 9901, "sc": 9902, "pmap": 9903}
#: Series descriptions (LO, at most 64 characters) per output kind.
SERIES_DESCRIPTIONS: dict[str, str] = {
    "sr": "CheXNet AI findings - RESEARCH USE ONLY",
    "sc": "CheXNet AI heatmap overlay - RESEARCH USE ONLY",
    "pmap": "CheXNet AI heatmap map - RESEARCH USE ONLY",
}

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: Patient / study attributes the highdicom constructors read as attributes (type 2).
_TYPE2_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


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


@dataclass(frozen=True)
class ImageResult:
    """One analysed image: its header, the model output and its heatmaps.

    Attributes
    ----------
    dataset
        The source instance (header; pixel data is not needed).
    prediction
        Probabilities and thresholds in :data:`~chexnet_dicom.model.labels.LABELS` order.
    heatmaps
        (14, Rows, Columns) float32 heatmaps on the source pixel grid, in [0, 1] on the
        model's fixed scale, or None (then no image regions are reported).
    flags
        Provenance flags from ingest (for example a header that lied), for the sidecar.
    """

    dataset: Dataset
    prediction: Prediction
    heatmaps: np.ndarray | None = None
    flags: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        probs = np.asarray(self.prediction.probabilities)
        if probs.shape != (NUM_CLASSES,) or not np.all(np.isfinite(probs)):
            raise OutputError(
                f"prediction must hold {NUM_CLASSES} finite probabilities, got shape {probs.shape}"
            )
        if tuple(self.prediction.labels) != LABELS:
            raise OutputError("prediction labels are not the 14 CheXNet findings in order")
        for kw in _REQUIRED_UIDS:
            if not str(self.dataset.get(kw, "") or ""):
                raise OutputError(f"source instance lacks {kw}; cannot reference it from a result")
        if self.heatmaps is not None:
            rows, cols = int(self.dataset.Rows), int(self.dataset.Columns)
            if self.heatmaps.shape != (NUM_CLASSES, rows, cols):
                raise OutputError(
                    f"heatmaps must be (14, Rows, Columns) = (14, {rows}, {cols}) on the source grid, "
                    f"got {self.heatmaps.shape}; map them with DisplayImage.to_source_grid first"
                )


@dataclass(frozen=True)
class SkippedInstance:
    """An instance of the study that was not analysed, and why.

    Attributes
    ----------
    reason
        Machine readable reason code (from the gate or an :class:`InputError`).
    message
        Human readable explanation (no PHI).
    dataset
        The instance header when it could be read, else None.
    """

    reason: str
    message: str
    dataset: Dataset | None = None


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


def evidence_header(ds: Dataset) -> Dataset:
    """Return a pixel-free copy of ``ds`` with the type 2 patient/study attributes present.

    highdicom reads these attributes directly; a source without, say, PatientBirthDate
    gets an empty value (type 2 in the output), never an invented one, and a value that
    is invalid for its VR (an anonymiser's hash in a date) is emptied or left out the same
    way (:func:`sanitize_copied`), so one bad attribute cannot lose the whole result.

    Parameters
    ----------
    ds
        Source instance.

    Raises
    ------
    OutputError
        If a UID needed to reference the instance is missing.
    """
    for kw in _REQUIRED_UIDS:
        if not str(ds.get(kw, "") or ""):
            raise OutputError(f"source instance lacks {kw}; cannot reference it from a result")
    header = Dataset()
    for elem in ds:
        if elem.keyword in _PIXEL_KEYWORDS or elem.tag.group in range(0x6000, 0x6020, 2):
            continue
        header.add(copy.copy(elem))  # copies: sanitising the header never touches the source
    for kw in _TYPE2_KEYWORDS:
        if kw not in header:
            setattr(header, kw, None)
    # highdicom parses some copied values (a Patient's Birth Date of "d14a..." raises), so
    # values invalid for their VR are left out before it sees them, as in the outputs.
    sanitize_copied(header)
    settle_character_set(header)
    if getattr(ds, "file_meta", None) is not None:
        header.file_meta = ds.file_meta
    return header


@contextlib.contextmanager
def quiet_highdicom() -> Iterator[None]:
    """Silence highdicom's messages that quote identifiers while building an output.

    highdicom warns with the patient name when it has a single component and logs
    instance UIDs at INFO; neither may reach our logs (no PHI in logs).
    """
    hd_logger = logging.getLogger("highdicom")
    level = hd_logger.level
    hd_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r".*unlikely to represent the intended person name", category=UserWarning
            )
            yield
    finally:
        hd_logger.setLevel(level)


_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})


_MULTI_BYTE_EXTENSIONS = frozenset({"ISO 2022 IR 87", "ISO 2022 IR 159", "ISO 2022 IR 149"})


def _highdicom_accepts(terms: list[str]) -> bool:
    """Whether highdicom writes this Specific Character Set (its rules are stricter than PS3.3)."""
    from highdicom.enum import SpecificCharacterSetValues

    try:
        for term in terms:
            SpecificCharacterSetValues(term)
    except ValueError:
        return False
    extensions = [t.startswith("ISO 2022") for t in terms]
    if len(terms) == 1:
        return not extensions[0]
    return all(extensions) and terms[0] not in _MULTI_BYTE_EXTENSIONS


def settle_character_set(ds: Dataset) -> str | None:
    """Make a copied header's Specific Character Set one the results can be written with.

    * Known and accepted by highdicom: kept (an empty value 1 of a multi-valued set is
      written as its meaning, ``ISO 2022 IR 6``).
    * Known to pydicom but in a form highdicom refuses (a lone code extension): the
      correctly decoded text is written as ``ISO_IR 192`` (UTF-8).
    * Absent, empty or unknown, with non-ASCII text: such a source is non-conformant
      and its real encoding unknown; pydicom read its bytes as ISO 8859-1, so declaring
      ``ISO_IR 100`` writes back the *same bytes* (the patient name still matches the
      source's in a PACS) and keeps them valid; ``ISO_IR 192`` when the text is not
      Latin-1.  Nothing is re-interpreted.

    Parameters
    ----------
    ds
        A header copy, changed in place.

    Returns
    -------
    str or None
        The character set newly declared, or None when the declared one was kept.
    """
    if "SpecificCharacterSet" in ds:
        declared = ds.SpecificCharacterSet
        terms = [str(t or "").strip() for t in (declared if isinstance(declared, MultiValue) else [declared])]
        if len(terms) > 1 and not terms[0]:
            terms[0] = "ISO 2022 IR 6"  # PS3.3 C.12.1.1.2: an empty value 1 is the default repertoire
        if not any(terms):  # present but empty: the default repertoire, as if undeclared
            del ds.SpecificCharacterSet
        elif all(t in pydicom.charset.python_encoding for t in terms):
            # pydicom decoded the text correctly; write it back under the same declaration
            # when highdicom accepts that form, else as UTF-8 (same text, new bytes).
            if _highdicom_accepts(terms):
                ds.SpecificCharacterSet = terms if len(terms) > 1 else terms[0]
                return None
            ds.SpecificCharacterSet = "ISO_IR 192"
            logger.warning("source Specific Character Set form is not writable: results re-encode as UTF-8")
            return "ISO_IR 192"
        else:
            # A term DICOM does not define: pydicom decoded the text as ISO 8859-1 (with a
            # warning), so it is treated exactly like an undeclared character set.
            del ds.SpecificCharacterSet
            logger.warning("source declares an unknown Specific Character Set: treated as undeclared")
    texts = [
        str(v)
        for elem in ds
        if elem.VR in _TEXT_VRS and elem.value is not None
        for v in (elem.value if isinstance(elem.value, MultiValue) else [elem.value])
    ]
    if all(t.isascii() for t in texts):
        return None
    try:
        for t in texts:
            t.encode("latin-1")
        charset = "ISO_IR 100"
    except UnicodeEncodeError:
        charset = "ISO_IR 192"
    ds.SpecificCharacterSet = charset
    logger.warning(
        "source has non-ASCII text but no Specific Character Set: results declare %s and keep its bytes",
        charset,
    )
    return charset


#: Text VRs whose values may hold line breaks (PS3.5 6.2: ST, LT, UT).
_FREE_TEXT_VRS = frozenset({"ST", "LT", "UT"})
#: Control characters no string value may hold: C0 except ESC (ISO 2022 code extension),
#: plus TAB/LF/FF/CR in the free-text VRs; DEL and C1 (0x7F-0x9F) are in no repertoire.
_FORBIDDEN_CONTROLS = {
    False: re.compile("[\x00-\x1a\x1c-\x1f\x7f-\x9f]"),
    True: re.compile("[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f-\x9f]"),
}


#: Enumerated values of copied attributes that highdicom enforces (it refuses "MALE").
_ENUMERATED: dict[str, tuple[str, ...]] = {"PatientSex": ("", "M", "F", "O")}


def _single_valued(tag: BaseTag) -> bool:
    try:
        return str(dictionary_VM(tag)) == "1"
    except KeyError:  # private or unknown: no rule to apply
        return False


def sanitize_copied(ds: Dataset) -> list[str]:
    """Drop (or empty, when type 2) top-level values that are invalid for their VR.

    Values copied from a source (for example a Patient's Age of ``"62"`` without its
    unit, several values in a single-valued attribute, control characters, or a
    PatientSex outside its enumerated values) must not make the output invalid;
    nothing is guessed or repaired.

    Parameters
    ----------
    ds
        An output dataset, changed in place.

    Returns
    -------
    list of str
        Keywords of the attributes that were removed or emptied (no values: PHI).
    """
    changed: list[str] = []
    for elem in list(ds):
        if elem.VR in ("SQ", "UI") or elem.value is None or elem.tag.group <= 0x0002:
            continue  # UIDs stay as the source has them: a reference must quote them exactly
        values = list(elem.value) if isinstance(elem.value, MultiValue) else [elem.value]
        try:
            if len(values) > 1 and _single_valued(elem.tag):
                raise ValueError("several values where the dictionary allows one")
            for v in values:
                if isinstance(v, (str, PersonName)):  # as read from a file; numbers/dates are typed
                    validate_value(elem.VR, str(v), pydicom.config.RAISE)
                    if _FORBIDDEN_CONTROLS[elem.VR in _FREE_TEXT_VRS].search(str(v)):
                        raise ValueError("control character")
                    allowed = _ENUMERATED.get(elem.keyword)
                    if allowed is not None and str(v) not in allowed:
                        raise ValueError("not an enumerated value")
        except (ValueError, TypeError):
            name = elem.keyword or str(elem.tag)
            if elem.keyword in _TYPE2_KEYWORDS:
                elem.value = None
            else:
                del ds[elem.tag]
            changed.append(name)
    if changed:
        logger.warning(
            "source attributes with invalid values were left out of a result: %s", ", ".join(changed)
        )
    return changed


def check_same_study(datasets: Iterable[Dataset]) -> str:
    """Return the common StudyInstanceUID of ``datasets``.

    Raises
    ------
    OutputError
        If they belong to several studies or the iterable is empty.
    """
    studies = {str(ds.StudyInstanceUID) for ds in datasets}
    if len(studies) != 1:
        raise OutputError(
            f"results must describe exactly one study, got {len(studies)}; group instances by study first"
        )
    return studies.pop()


def finalize_file_meta(ds: _DS) -> _DS:
    """Set this package's Implementation Class UID and Version Name on ``ds``."""
    ds.file_meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return ds


def software_versions(card: CardLike) -> list[str]:
    """Software Versions values: the model version and this package's version."""
    return [str(card.version)[:64], f"chexnet-dicom {__version__}"]


def write_dataset(ds: Dataset, path: str | Path) -> Path:
    """Write ``ds`` as a DICOM Part 10 file, atomically (:func:`chexnet_dicom.atomic.atomic_write`).

    Parameters
    ----------
    ds
        A dataset with file meta information.
    path
        Destination file.

    Returns
    -------
    Path
        The written file.
    """
    return atomic_write(path, lambda tmp: pydicom.dcmwrite(tmp, ds, enforce_file_format=True))


def sorted_uids(datasets: Sequence[Dataset]) -> list[str]:
    """SOP Instance UIDs of ``datasets``, sorted (order-independent derivations)."""
    return sorted(str(ds.SOPInstanceUID) for ds in datasets)
