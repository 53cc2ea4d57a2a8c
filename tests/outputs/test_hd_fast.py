"""The highdicom adapter (outputs/hd_fast.py): pinned to the internals it stands in for, same document.

If a test here fails after a highdicom upgrade, read the new ``_SR.__init__``,
``Comprehensive3DSR.__init__`` and ``collect_evidence``; when the adapter's reasoning
still holds, update ``PINNED_VERSION`` / ``PINNED_SOURCE``; else fix or drop the adapter
(the public constructor is the fallback, the same document, slower).
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import logging
import pkgutil
from typing import Any

import highdicom
import numpy as np
import pydicom
import pytest
from highdicom.sr import (
    CodedConcept,
    Comprehensive3DSR,
    ContainerContentItem,
    ContentSequence,
    ImageContentItem,
    TextContentItem,
)
from pydicom.sr.codedict import codes

from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.outputs import hd_fast
from chexnet_dicom.outputs.sr import build_sr
from tests.helpers.outputs import blob, make_card, make_dx, make_result
from tests.helpers.sr_guard import frozen_clock

PROBS = np.linspace(0.05, 0.95, len(LABELS))


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _study() -> tuple[list[Any], Any]:
    card = make_card()
    results = []
    for seed in ("a",):
        ds = make_dx(seed=seed, rows=64, cols=48)
        heat = np.repeat(blob(64, 48, 30, 20, 6)[None], len(LABELS), axis=0)
        results.append(make_result(ds, card, PROBS, heat=heat))
    return results, card


def test_the_installed_highdicom_is_the_pinned_one() -> None:
    assert highdicom.__version__ == hd_fast.PINNED_VERSION, (
        f"highdicom {highdicom.__version__}: re-check outputs/hd_fast.py against its SR constructor"
    )
    assert hd_fast.internals_digest() == hd_fast.PINNED_SOURCE, "highdicom's SR constructor changed"
    assert hd_fast.fast_path_available()
    # what the adapter relies on, by name
    init = highdicom.sr.sop._SR.__init__
    assert "content_copy = deepcopy(content)" in inspect.getsource(init)
    assert hasattr(Comprehensive3DSR(evidence=[make_dx()], content=_root(), series_instance_uid="1.2.3",
                                     series_number=1, sop_instance_uid="1.2.3.4", instance_number=1), "_content")  # fmt: skip


def _root() -> ContainerContentItem:
    root = ContainerContentItem(name=codes.cid7021.ImagingMeasurementReport, template_id="1500")
    root.ContentSequence = ContentSequence(
        [TextContentItem(name=codes.DCM.Comment, value="x", relationship_type="CONTAINS")]
    )
    return root


def test_fast_and_public_constructors_write_the_same_document(monkeypatch: pytest.MonkeyPatch) -> None:
    results, card = _study()
    with frozen_clock():
        fast = build_sr(results, card)
        monkeypatch.setattr(hd_fast, "fast_path_available", lambda: False)
        monkeypatch.setattr(CodedConcept, "__hash__", hd_fast._CONCEPT_HASH)  # highdicom's own
        public = build_sr(results, card)
    assert _bytes(fast) == _bytes(public)
    assert "ContentSequence" in fast and len(fast.ContentSequence) == len(public.ContentSequence)
    # highdicom's typed view of the content reads the same tree
    assert len(fast.content[0].ContentSequence) == len(public.content[0].ContentSequence)
    assert _typed(fast.content) == _typed(public.content)


def _typed(items: Any) -> list[tuple[str, str, int]]:
    """(value-type class, concept name, depth) of a typed content tree, in order.

    The class is highdicom's content item class of the value type (the public path
    re-types a copy to these; the built tree holds subclasses such as
    ``CoordinatesForMeasurement``).
    """
    out: list[tuple[str, str, int]] = []

    def walk(seq: Any, depth: int) -> None:
        for item in seq:
            base = next(c for c in type(item).__mro__ if c.__module__ == "highdicom.sr.value_types")
            out.append((base.__name__, item.name.meaning, depth))
            if "ContentSequence" in item:
                walk(item.ContentSequence, depth + 1)

    walk(items, 0)
    return out


def test_a_reference_without_evidence_is_refused_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    results, _card = _study()
    other = make_dx(seed="elsewhere")
    root = _root()
    root.ContentSequence.append(
        ImageContentItem(
            name=codes.DCM.SourceImageForSegmentation,
            referenced_sop_class_uid=other.SOPClassUID,
            referenced_sop_instance_uid=other.SOPInstanceUID,
            relationship_type="CONTAINS",
        )
    )
    args: dict[str, Any] = {
        "series_instance_uid": "1.2.3",
        "series_number": 1,
        "sop_instance_uid": "1.2.3.4",
        "instance_number": 1,
    }
    with pytest.raises(ValueError, match="No evidence"):
        hd_fast.comprehensive_3d_sr(evidence=[results[0].dataset], content=root, **args)
    with pytest.raises(ValueError, match="No evidence"):
        Comprehensive3DSR(evidence=[results[0].dataset], content=root, **args)


def test_the_cached_concept_hash_is_highdicoms_hash() -> None:
    assert hd_fast.install_concept_hash()
    assert CodedConcept.__hash__ is not hd_fast._CONCEPT_HASH
    for concept in (CodedConcept("123", "DCM", "x"), CodedConcept.from_code(codes.SCT.Present)):
        assert hash(concept) == hd_fast._CONCEPT_HASH(concept) == hash(concept)  # computed, then cached
        assert concept.__dict__[hd_fast._HASH_KEY] == hash(concept)
        assert hd_fast._HASH_KEY not in [e.keyword for e in concept]  # never a DICOM element
    lut = {CodedConcept("123", "DCM", "x"): 1}
    assert lut[CodedConcept("123", "DCM", "other meaning")] == 1  # look-ups as highdicom's (value, scheme)


def test_another_highdicom_takes_the_public_path_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hd_fast.fast_path_available.cache_clear()
    monkeypatch.setattr(highdicom, "__version__", "9.9.9")
    try:
        with caplog.at_level(logging.WARNING, logger=hd_fast.__name__):
            assert not hd_fast.fast_path_available()
        assert "public constructor" in caplog.text and "9.9.9" in caplog.text
    finally:
        hd_fast.fast_path_available.cache_clear()


#: SHA-256 of highdicom 0.28.2's _standard/module_attribute_map.json (the lazy map's layout).
MAP_SHA256 = "9026a2f2037e868396bf74c55fef77183a7a69979b83e4cd3cc2b425e87f8fa6"


def _full_map() -> dict[str, Any]:
    raw = pkgutil.get_data("highdicom", "_standard/module_attribute_map.json")
    assert raw is not None
    return {"raw": raw, "map": json.loads(raw)}


def test_the_module_map_file_is_the_pinned_one() -> None:
    raw = pkgutil.get_data("highdicom", "_standard/module_attribute_map.json")
    assert raw is not None and len(raw) == hd_fast.PINNED_MAP_BYTES
    assert hashlib.sha256(raw).hexdigest() == MAP_SHA256, (
        "highdicom's module map changed: re-run the slow test"
    )
    lazy = hd_fast.LazyModuleAttributes(raw)
    assert len(lazy) > 400 and "patient" in lazy and "no-such-module" not in lazy
    assert [a["keyword"] for a in lazy["patient"]][:2] == [
        "ReferencedPatientSequence",
        "ReferencedSOPClassUID",
    ]


@pytest.mark.slow
def test_every_module_of_the_lazy_map_is_highdicoms() -> None:
    """On the pinned file (the default test checks its hash): the same keys, in order, and values."""
    full = _full_map()
    lazy = hd_fast.LazyModuleAttributes(full["raw"])
    assert list(lazy) == list(full["map"])
    assert dict(lazy.items()) == full["map"]


def test_highdicom_looks_the_map_up_through_the_lazy_one_once_installed() -> None:
    assert hd_fast.install()
    import highdicom.image  # imported after the install: binds the lazy map
    from highdicom import _standard_utils

    for module in (_standard_utils, highdicom.base, highdicom.image):
        assert module.get_module_attribute_map is hd_fast.lazy_module_map
    assert _standard_utils.is_attribute_in_iod("PixelData", "1.2.840.10008.5.1.4.1.1.1.1")  # DX: an image
    assert not _standard_utils.does_iod_have_pixel_data(
        "1.2.840.10008.5.1.4.1.1.88.34"
    )  # Comprehensive 3D SR
