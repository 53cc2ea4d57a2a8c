"""Ledger records: what an analysed image leaves for later SR versions round-trips as bytes, never pickled."""

from __future__ import annotations

import numpy as np
import pytest

from chexnet_dicom.errors import StorageError
from chexnet_dicom.model.prediction import Prediction
from chexnet_dicom.node.carry import CarriedImage, CarriedSkip
from chexnet_dicom.node.records import decode_record, encode_record


def _prediction() -> Prediction:
    rng = np.random.default_rng(0)
    return Prediction(
        probabilities=rng.random(14),
        thresholds=np.full(14, 0.5),
        model_name="m",
        model_version="1",
        weights_sha256="ab" * 32,
        cams=rng.random((14, 7, 7)).astype(np.float32),
        precision="fp32",
        device="cpu",
        backend="onnxruntime",
        labels=tuple(f"L{k}" for k in range(14)),
    )


def test_an_image_record_round_trips() -> None:
    item = CarriedImage(
        b"DICM-header", _prediction(), (2048, 2000), (1024, 1000), ("flip_h",), 2, {"voi": "x"}
    )
    back = decode_record(encode_record(item))
    assert isinstance(back, CarriedImage)
    assert (
        back.header == item.header
        and back.source_shape == (2048, 2000)
        and back.display_shape == (1024, 1000)
    )
    assert back.orientation_ops == ("flip_h",) and back.decode_factor == 2 and back.provenance == {"voi": "x"}
    np.testing.assert_array_equal(back.prediction.probabilities, item.prediction.probabilities)
    np.testing.assert_array_equal(back.prediction.cams, item.prediction.cams)
    assert back.prediction.labels == item.prediction.labels


def test_the_out_of_distribution_score_and_flag_survive_the_record() -> None:
    import dataclasses

    pred = dataclasses.replace(
        _prediction(), ood_score=412.25, ood_threshold=385.75, ood_method="mahalanobis", ood_note=""
    )
    back = decode_record(encode_record(CarriedImage(b"hdr", pred, (64, 64), (64, 64))))
    assert isinstance(back, CarriedImage)
    p = back.prediction
    assert p.ood_score == pytest.approx(412.25) and p.ood_threshold == pytest.approx(385.75)
    assert p.ood_method == "mahalanobis" and p.ood_note == "" and p.out_of_distribution is True
    assert p.ood_dict() == pred.ood_dict()
    # without a score (a card without reference statistics) the note survives, the flag stays unknown
    none = decode_record(encode_record(CarriedImage(b"hdr", _prediction(), (64, 64), (64, 64))))
    assert isinstance(none, CarriedImage)
    assert none.prediction.ood_score is None and none.prediction.out_of_distribution is None
    assert none.prediction.ood_note == _prediction().ood_note


def test_a_skip_record_round_trips_and_damage_is_a_storage_error() -> None:
    data = encode_record(CarriedSkip(b"hdr", "skipped", "lateral-view", "a lateral view"))
    back = decode_record(data)
    assert isinstance(back, CarriedSkip) and back.reason == "lateral-view" and back.header == b"hdr"
    with pytest.raises(StorageError):
        decode_record(data[: len(data) // 2])
    with pytest.raises(StorageError):
        decode_record(b"\x80\x04cos\nsystem\n.")  # a pickle is never loaded


def test_a_carried_image_keeps_its_score_group_in_a_later_sr() -> None:
    import dataclasses
    import io

    from chexnet_dicom.model.card import Preprocessing
    from chexnet_dicom.node.carry import restore_image
    from chexnet_dicom.outputs.sr import build_sr
    from tests.helpers.outputs import make_card, make_dx, make_prediction

    card = make_card()
    ds = make_dx(rows=32, cols=32)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    pred = dataclasses.replace(
        make_prediction(card, np.full(14, 0.2)),
        ood_score=412.25,
        ood_threshold=385.75,
        ood_method="mahalanobis",
        ood_note="",
    )
    back = decode_record(encode_record(CarriedImage(buf.getvalue(), pred, (32, 32), (32, 32))))
    assert isinstance(back, CarriedImage)
    restored = restore_image(back, Preprocessing(resize=32, input_size=32))
    sr = build_sr([restored], card)
    groups = [
        item
        for c in sr.ContentSequence
        if c.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurements"
        for item in c.ContentSequence
    ]
    scores = [
        float(row.MeasuredValueSequence[0].NumericValue)
        for g in groups
        for row in g.ContentSequence
        if row.ValueType == "NUM"
        and row.ConceptNameCodeSequence[0].CodeMeaning == "Out-of-distribution score"
    ]
    assert scores == [pytest.approx(412.25)]
