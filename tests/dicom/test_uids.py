"""Tests for deterministic UIDs (chexnet_dicom.dicom.uids)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.uid import UID

from chexnet_dicom import __version__
from chexnet_dicom.dicom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    derive_uid,
    is_valid_uid,
)


def test_derive_uid_matches_definition() -> None:
    # Recompute independently: length-prefixed UTF-8 parts, first 128 bits of sha256.
    h = hashlib.sha256()
    for p in ("seed-1", "study"):
        b = p.encode()
        h.update(len(b).to_bytes(8, "big") + b)
    expected = "2.25." + str(int(h.hexdigest()[:32], 16))
    assert derive_uid("seed-1", "study") == expected


@given(st.lists(st.text(max_size=20), min_size=1, max_size=5))
def test_derive_uid_always_valid_and_deterministic(parts: list[str]) -> None:
    uid = derive_uid(*parts)
    assert UID(uid).is_valid
    assert is_valid_uid(uid)
    assert len(uid) <= 64
    assert uid.startswith("2.25.")
    assert derive_uid(*parts) == uid


def test_derive_uid_distinct_and_unambiguous() -> None:
    assert derive_uid("ab", "c") != derive_uid("a", "bc")
    assert derive_uid("a", "b") != derive_uid("b", "a")
    assert derive_uid("a") != derive_uid("a", "")
    uids = {derive_uid("seed", str(i)) for i in range(2000)}
    assert len(uids) == 2000


def test_derive_uid_rejects_bad_parts() -> None:
    with pytest.raises(ValueError):
        derive_uid()
    with pytest.raises(TypeError):
        derive_uid("a", 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("uid", "ok"),
    [
        ("1.2.3", True),
        ("0.1", True),
        ("1.02", False),
        ("1..2", False),
        ("1.2.", False),
        ("", False),
        ("1.a", False),
        ("1." + "1" * 63, False),
    ],
)
def test_is_valid_uid(uid: str, ok: bool) -> None:
    assert is_valid_uid(uid) is ok
    assert UID(uid).is_valid is ok


def test_implementation_identifiers() -> None:
    assert UID(IMPLEMENTATION_CLASS_UID).is_valid
    assert derive_uid("chexnet-dicom", "implementation-class", __version__) == IMPLEMENTATION_CLASS_UID
    assert 0 < len(IMPLEMENTATION_VERSION_NAME) <= 16
    assert __version__ in IMPLEMENTATION_VERSION_NAME
