"""The conformance matrix itself: every axis covered, every case renders back to its NIH picture."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.pixels import get_encoder
from pydicom.uid import HTJ2K, HTJ2KLossless, HTJ2KLosslessRPCL

from chexnet_dicom.dicom.decode import PREFERRED_PLUGINS
from chexnet_dicom.dicom.load import load_image
from chexnet_dicom.testing.matrix import CASES, FAST, Matrix, frontal_keys, nih_picture
from tests.helpers.shared import shared_path

#: Largest difference from the NIH picture: lossless cases differ by quantisation only (a
#: 10-bit store of an 8-bit picture, the SIGMOID inverse), lossy ones by what the codec dropped.
LOSSLESS_ATOL = 0.003
LOSSY_ATOL = 0.05
LOSSY_MEAN_ATOL = 0.006


def test_every_axis_is_covered() -> None:
    syntaxes = {c.syntax for c in CASES}
    # every compressed syntax the decoder has a preferred plugin for, but HTJ2K (below)
    decodable = set(PREFERRED_PLUGINS) - {HTJ2K, HTJ2KLossless, HTJ2KLosslessRPCL}
    assert decodable <= syntaxes, decodable - syntaxes
    assert {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.70"} <= syntaxes  # fmt: skip
    assert {(c.meta, c.preamble) for c in CASES} == {(True, True), (True, False), (False, False)}
    assert {c.photometric for c in CASES} == {"MONOCHROME1", "MONOCHROME2"}
    assert {(c.bits, c.signed) for c in CASES} >= {(b, s) for b in (8, 10, 12, 14, 16) for s in (False, True)}
    assert {c.modality_lut for c in CASES} == {"rescale", "sequence"}
    assert any(c.rescale != (1.0, 0.0) for c in CASES)
    assert {c.voi for c in CASES} == {"LINEAR", "LINEAR_EXACT", "SIGMOID", "LUT"}
    assert {"IDENTITY", "INVERSE"} <= {c.shape for c in CASES}
    assert any(not c.meta and c.voi == "LUT" for c in CASES)  # the legacy file issue 19 saw fail
    assert set(FAST) <= {c.name for c in CASES} and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("syntax", [HTJ2KLossless, HTJ2K])
def test_htj2k_has_no_encoder_here(syntax: str) -> None:
    # the matrix holds no HTJ2K case because nothing installed writes one; when that changes, add one
    with pytest.raises(NotImplementedError):
        get_encoder(syntax)


def test_every_case_renders_back_to_its_nih_picture(matrix: Matrix) -> None:
    assert not matrix.missing, matrix.missing
    nih = shared_path("nih")
    keys = frontal_keys(nih, 6)
    problems = []
    for name, item in matrix.files.items():
        loaded = load_image(item.path)
        want = nih_picture(nih, keys[item.case.image], 256)
        diff = np.abs(loaded.display.image.astype(np.float64) - want)
        limit = LOSSY_ATOL if item.case.lossy else LOSSLESS_ATOL
        if diff.max() > limit or diff.mean() > LOSSY_MEAN_ATOL or loaded.flags:
            problems.append(f"{name}: max {diff.max():.4f} mean {diff.mean():.5f} flags {loaded.flags}")
        assert item.key == keys[item.case.image]
    assert len(matrix.files) == len(CASES)
    assert not problems, problems
