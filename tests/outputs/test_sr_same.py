"""The same SR document: speed work on ``build_sr`` leaves every byte of the guard SRs as it was.

The guard studies (:mod:`tests.helpers.sr_guard`: the real chest headers, the demo card,
fixed probabilities, two-blob heatmaps, OOD groups, a skipped duplicate) are built with
highdicom's clock frozen, and their digests compared with
``tests/reference/sr_reference.json`` (regenerate with
``tests/reference/make_sr_reference.py`` only when the document is meant to change).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chexnet_dicom.outputs.sr import build_sr
from tests.helpers.outputs import scoord_regions
from tests.helpers.shared import REPO
from tests.helpers.sr_guard import CHEST_FILES, frozen_clock, guard_cases, sr_digest

REFERENCE = REPO / "tests" / "reference" / "sr_reference.json"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_sr_of_each_real_chest_study_is_the_stored_document(shared_dicom: Path) -> None:
    reference = json.loads(REFERENCE.read_text())
    assert sorted(reference) == sorted(CHEST_FILES)
    regions = 0
    with frozen_clock():
        for case in guard_cases(shared_dicom / "chest"):
            sr = build_sr(case.results, case.card, skipped=case.skipped)
            assert str(sr.ContentDate) == "20260102" and str(sr.ContentTime).startswith("030405"), (
                "clock not frozen"
            )
            got, want = sr_digest(sr), reference[case.name]
            changed = sorted(
                k
                for k in set(got["elements"]) | set(want["elements"])
                if got["elements"].get(k) != want["elements"].get(k)
            )
            assert got["bytes"] == want["bytes"], (
                f"{case.name}: the SR changed in {changed or 'its file meta'}"
            )
            regions += len(scoord_regions(sr))
    assert regions >= len(CHEST_FILES)  # present findings with regions are part of what is pinned
