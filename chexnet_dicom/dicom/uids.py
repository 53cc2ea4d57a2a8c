"""Deterministic DICOM UIDs under the ``2.25`` (UUID-derived) root.

PS3.5 section B.2 allows a UID of the form ``2.25.<decimal of a 128-bit integer>``,
so no organisation root is needed. :func:`derive_uid` makes such a UID from the
SHA-256 of its parts: the same parts always give the same UID, different parts
give different UIDs (up to a 2**-128 collision chance).

The parts are joined without ambiguity: each is encoded as UTF-8 and prefixed with
its length as 8 big-endian bytes, so ``("ab", "c")`` and ``("a", "bc")`` differ.
"""

from __future__ import annotations

import hashlib
import re

from chexnet_dicom import __version__

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "UID_ROOT",
    "derive_uid",
    "is_valid_uid",
]

#: The UUID-derived UID root of PS3.5 B.2.
UID_ROOT = "2.25."

#: Package name used for the implementation identifiers.
_PACKAGE = "chexnet-dicom"

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def derive_uid(*parts: str) -> str:
    """Return a deterministic ``2.25.`` UID derived from ``parts``.

    Parameters
    ----------
    *parts
        Strings that identify the object (for example a seed, a study name and a
        role). At least one part is required. Order matters.

    Returns
    -------
    str
        ``"2.25."`` followed by the decimal value of the first 128 bits of
        SHA-256 over the length-prefixed UTF-8 parts; at most 44 characters,
        no leading zeros in any component.

    Raises
    ------
    TypeError
        If a part is not a string.
    ValueError
        If no part is given.
    """
    if not parts:
        raise ValueError("derive_uid needs at least one part; pass e.g. a seed and a role")
    digest = hashlib.sha256()
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"derive_uid parts must be str, got {type(part).__name__}")
        data = part.encode("utf-8")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    value = int.from_bytes(digest.digest()[:16], "big")
    return f"{UID_ROOT}{value}"


def is_valid_uid(uid: str) -> bool:
    """Return whether ``uid`` is a syntactically valid DICOM UID (PS3.5 9.1).

    Parameters
    ----------
    uid
        The candidate UID.

    Returns
    -------
    bool
        True when it has at most 64 characters, only digits and dots, and no
        component is empty or has a leading zero.
    """
    return 0 < len(uid) <= 64 and _UID_RE.match(uid) is not None


#: Implementation Class UID (0002,0012) of files written by this package,
#: derived from the package name and version (no borrowed organisation root).
IMPLEMENTATION_CLASS_UID: str = derive_uid(_PACKAGE, "implementation-class", __version__)

#: Implementation Version Name (0002,0013): at most 16 characters (SH).
IMPLEMENTATION_VERSION_NAME: str = f"CHEXDCM_{__version__}"[:16]
