"""The OOD score's SR content items and legend line."""

from __future__ import annotations

import dataclasses

import numpy as np
from pydicom.sr.codedict import codes

from chexnet_dicom.outputs import ood_items
from tests.helpers.outputs import make_card, make_dx, make_prediction, make_result


def _result(score: float | None):  # type: ignore[no-untyped-def]
    card = make_card()
    pred = make_prediction(card, np.full(14, 0.2))
    if score is not None:
        pred = dataclasses.replace(
            pred, ood_score=score, ood_threshold=10.0, ood_method="mahalanobis", ood_note=""
        )
    return make_result(make_dx(rows=64, cols=64), card, pred.probabilities), pred


def test_group_carries_the_score_and_the_flag() -> None:
    base, pred = _result(12.5)
    res = dataclasses.replace(base, prediction=pred)
    group = ood_items.ood_group(res, 1)
    assert group is not None
    items = {item.ConceptNameCodeSequence[0].CodeValue: item for item in group[0].ContentSequence}
    num = items["OOD_SCORE"]
    assert float(num.MeasuredValueSequence[0].NumericValue) == 12.5
    assert items["OOD"].ConceptCodeSequence[0].CodeValue == codes.SCT.Yes.value
    assert "OUT-OF-DISTRIBUTION" in ood_items.legend_line(pred)
    assert "12.5" in ood_items.withheld_reason(pred) and "10" in ood_items.withheld_reason(pred)
    below = dataclasses.replace(res, prediction=dataclasses.replace(pred, ood_score=3.0))
    group = ood_items.ood_group(below, 1)
    assert group is not None
    items = {item.ConceptNameCodeSequence[0].CodeValue: item for item in group[0].ContentSequence}
    assert items["OOD"].ConceptCodeSequence[0].CodeValue == codes.SCT.No.value


def test_no_group_without_a_score() -> None:
    res, pred = _result(None)
    assert ood_items.ood_group(res, 1) is None
    assert ood_items.legend_line(pred).endswith("not available")
