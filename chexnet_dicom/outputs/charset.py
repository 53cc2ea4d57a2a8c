"""Specific Character Set of a result: written so that the source's text round-trips validly.

See :func:`settle_character_set`.
"""

from __future__ import annotations

import logging

import pydicom.charset
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

__all__ = ["detect_encoding", "settle_character_set"]

logger = logging.getLogger(__name__)

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
    * Absent, empty or unknown, with non-ASCII text: such a source is non-conformant.
      Its bytes are decoded in their most likely encoding (:func:`detect_encoding`:
      valid UTF-8, or charset-normalizer's confident guess such as Windows-1251) and
      written as ``ISO_IR 192`` (UTF-8), so a PACS shows readable names. When the
      guess is not confident, pydicom's ISO 8859-1 reading stands and ``ISO_IR 100``
      writes back the *same bytes*. Only keywords are logged, never values.

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
    elems = [elem for elem in ds if elem.VR in _TEXT_VRS and elem.value is not None]
    texts = [str(v) for elem in elems for v in _values(elem)]
    if all(t.isascii() for t in texts):
        return None
    try:
        raw = [t.encode("latin-1") for t in texts]  # pydicom read undeclared bytes as ISO 8859-1
    except UnicodeEncodeError:  # text that never came from 8-bit bytes (built in memory)
        ds.SpecificCharacterSet = "ISO_IR 192"
        logger.warning("non-Latin-1 text without a Specific Character Set: results declare ISO_IR 192")
        return "ISO_IR 192"
    encoding = detect_encoding(raw)
    if encoding is None:
        ds.SpecificCharacterSet = "ISO_IR 100"
        logger.warning(
            "source has non-ASCII text but no Specific Character Set and its encoding is not "
            "recognised with confidence: results declare ISO_IR 100 and keep its bytes (%s)",
            _keywords(elems),
        )
        return "ISO_IR 100"
    for elem in elems:
        decoded: list[object] = [_redecode(v, encoding) for v in _values(elem)]
        if elem.VR == "PN":
            decoded = [PersonName(str(v)) for v in decoded]
        elem.value = (
            MultiValue(type(decoded[0]), decoded) if isinstance(elem.value, MultiValue) else decoded[0]
        )
    ds.SpecificCharacterSet = "ISO_IR 192"
    logger.warning(
        "source has non-ASCII text but no Specific Character Set: decoded as %s, results declare ISO_IR 192 (%s)",
        encoding,
        _keywords(elems),
    )
    return "ISO_IR 192"


def _values(elem: DataElement) -> list[object]:
    return list(elem.value) if isinstance(elem.value, MultiValue) else [elem.value]


def _keywords(elems: list[DataElement]) -> str:
    """Keywords (never values: PHI) of the elements with non-ASCII text."""
    return ", ".join(e.keyword or str(e.tag) for e in elems if not all(str(v).isascii() for v in _values(e)))


def _redecode(value: object, encoding: str) -> str:
    return str(value).encode("latin-1").decode(encoding)


#: Chaos (charset-normalizer's mess ratio) above which a guess is not used: mixed
#: Latin/Cyrillic headers score about 0.25.
_MAX_CHAOS = 0.35
#: Coherence (how well the decoded letters fit one language) a guess needs; short
#: Latin-1 names score 0 (any single-byte code page decodes them), real text 0.5-0.9.
_MIN_COHERENCE = 0.5


def detect_encoding(values: list[bytes]) -> str | None:
    """Return the most likely encoding of undeclared 8-bit text, or None when not confident.

    Strictly valid UTF-8 with multi-byte sequences is UTF-8 (Latin-1 text almost never
    is). Otherwise charset-normalizer judges the non-ASCII values together; its guess is
    used only when its decoding reads as a language (coherence at least 0.5, chaos at most
    0.35) and differs from ISO 8859-1. None means: keep ISO 8859-1 and the bytes.

    Parameters
    ----------
    values
        The raw bytes of every text value.

    Returns
    -------
    str or None
        A Python codec name, or None.
    """
    non_ascii = [v.strip() for v in values if not v.isascii()]
    if not non_ascii:
        return None
    try:
        for v in non_ascii:
            v.decode("utf-8")
        return "utf_8"
    except UnicodeDecodeError:
        pass
    import charset_normalizer

    best = charset_normalizer.from_bytes(b"\n".join(non_ascii), threshold=_MAX_CHAOS).best()
    if best is None or best.coherence < _MIN_COHERENCE or best.chaos > _MAX_CHAOS:
        return None
    encoding = str(best.encoding)
    try:
        if all(v.decode(encoding) == v.decode("latin-1") for v in non_ascii):
            return None  # the same text as today's reading
        return encoding
    except (UnicodeDecodeError, LookupError):
        return None
