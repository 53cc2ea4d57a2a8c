"""The source header a result copies: Patient and Study modules, cleaned of invalid values.

:func:`evidence_header` gives highdicom a pixel-free copy of a source instance with the
type 2 patient/study attributes present; :func:`sanitize_copied` empties (type 2) or
leaves out values that are invalid for their VR, so that one bad attribute of a real
header cannot lose or invalidate the whole result; UIDs are never touched.
:func:`quiet_highdicom` keeps highdicom's identifier-quoting messages out of the logs.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import warnings
from collections.abc import Iterable, Iterator

import pydicom.config
from pydicom.datadict import dictionary_VM
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName, validate_value

from chexnet_dicom.errors import OutputError
from chexnet_dicom.outputs.charset import settle_character_set

__all__ = ["check_same_study", "evidence_header", "quiet_highdicom", "sanitize_copied"]

logger = logging.getLogger(__name__)

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
    settle_character_set(header)  # first: a re-decoded value is then validated as text
    sanitize_copied(header)
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

    A value invalid for its VR whatever the encoding is not kept: 966_fixed's
    AccessionNumber is a 56-character hash, and SH holds at most 16 characters in every
    character set (PS3.5 6.2), so the results carry it empty (type 2) and the study is
    matched by its StudyInstanceUID, which is always copied exactly. Only the keyword
    is logged. A text value that is valid once decoded (undeclared 8-bit names) is kept:
    :func:`chexnet_dicom.outputs.charset.settle_character_set` runs first.

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
