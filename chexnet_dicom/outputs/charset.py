"""Specific Character Set of a result: written so that the source's text round-trips validly.

See :func:`settle_character_set`.
"""

from __future__ import annotations

import logging

import pydicom.charset
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

__all__ = ["settle_character_set"]

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
