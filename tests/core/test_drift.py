"""Drift score: no alarm on in-distribution windows, an alarm from each part's own shift."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset
from scipy.stats import chi2_contingency, ks_2samp

from chexnet_dicom.drift import (
    METADATA_KEYS,
    DriftReference,
    Observation,
    age_band,
    load_reference,
    metadata_of,
    save_reference,
    score_window,
)
from chexnet_dicom.errors import WeightsError

D = 32
N_FINDINGS = 14


def _observations(
    rng: np.random.Generator,
    n: int,
    *,
    feature_shift: float = 0.0,
    manufacturer: tuple[str, ...] = ("ACME", "ACME", "ACME", "Other"),
    prob_shift: float = 0.0,
    features: bool = True,
) -> list[Observation]:
    direction = np.ones(D) / math.sqrt(D)
    out = []
    for _ in range(n):
        meta = {
            "manufacturer": str(rng.choice(manufacturer)),
            "model": "M1",
            "view": str(rng.choice(["PA", "PA", "AP"])),
            "age_band": age_band(float(rng.uniform(20, 90))),
            "sex": str(rng.choice(["M", "F"])),
            "pixel_spacing": "0.14",
            "photometric_bits": "MONOCHROME2/12",
            "transfer_syntax": "1.2.840.10008.1.2.1",
        }
        probs = np.clip(rng.beta(2, 8, N_FINDINGS) + prob_shift, 0, 1)
        feats = rng.normal(size=D) + feature_shift * direction * math.sqrt(D) if features else None
        out.append(Observation(meta, probs, feats, probs >= 0.5))
    return out


@pytest.fixture(scope="module")
def reference() -> DriftReference:
    return DriftReference.from_observations(_observations(np.random.default_rng(0), 300))


def test_in_distribution_windows_never_alarm(reference: DriftReference) -> None:
    rng = np.random.default_rng(1)
    scores = [score_window(reference, _observations(rng, 40)) for _ in range(40)]
    assert not any(s.alarm for s in scores), max(s.combined for s in scores)
    assert set(scores[0].parts) == {"metadata", "features", "outputs"}


@pytest.mark.parametrize(
    ("kwargs", "part"),
    [
        ({"feature_shift": 1.0}, "features"),
        ({"manufacturer": ("NewVendor",)}, "metadata"),
        ({"prob_shift": 0.3}, "outputs"),
    ],
)
def test_each_part_raises_the_alarm_on_its_own_shift(
    reference: DriftReference, kwargs: dict, part: str
) -> None:
    score = score_window(reference, _observations(np.random.default_rng(2), 30, **kwargs))
    assert score.alarm
    assert max(score.parts, key=score.parts.__getitem__) == part
    assert score.combined == pytest.approx(max(score.parts.values()))


def test_scores_follow_the_documented_weighted_bonferroni(reference: DriftReference) -> None:
    window = _observations(np.random.default_rng(3), 25, prob_shift=0.05)
    score = score_window(reference, window, alpha=0.01)
    # outputs part from scipy directly: Bonferroni over the 14 KS tests, weight 1/3
    probs = np.stack([o.probabilities for o in window])
    p = min(1.0, 14 * min(ks_2samp(reference.probabilities[:, i], probs[:, i]).pvalue for i in range(14)))
    assert score.p_values["outputs"] == pytest.approx(p, rel=1e-9)
    expected = math.log10(1 / min(1.0, 3 * p)) / math.log10(1 / 0.01)
    assert score.parts["outputs"] == pytest.approx(expected, rel=1e-9)
    rate = float(np.mean([o.probabilities[0] >= 0.5 for o in window]))
    assert score.details["outputs"]["finding1.present_rate"] == pytest.approx(rate)


def test_metadata_test_is_scipy_chi2_with_rare_values_pooled() -> None:
    ref = _observations(np.random.default_rng(4), 100)
    reference = DriftReference.from_observations(ref)
    window = _observations(np.random.default_rng(5), 30, manufacturer=("ACME", "Other", "Unseen"))
    score = score_window(reference, window)
    counts = reference.metadata_counts["manufacturer"]
    win = {c: sum(o.metadata["manufacturer"] == c for o in window) for c in ("ACME", "Other", "Unseen")}
    table = np.array(
        [[counts["ACME"], counts["Other"], 0], [win["ACME"], win["Other"], win["Unseen"]]], float
    )
    expected = chi2_contingency(table, lambda_="log-likelihood").pvalue
    assert score.details["metadata"]["manufacturer"] == pytest.approx(expected, rel=1e-9)
    # constant variables (one category in both) are not tested
    assert "model" not in score.details["metadata"]


def test_without_features_the_part_is_left_out_and_weights_renormalised() -> None:
    reference = DriftReference.from_observations(_observations(np.random.default_rng(6), 60, features=False))
    score = score_window(reference, _observations(np.random.default_rng(7), 30, features=False))
    assert set(score.parts) == {"metadata", "outputs"}
    expected = math.log10(1 / min(1.0, 2 * score.p_values["outputs"])) / 3
    assert score.parts["outputs"] == pytest.approx(expected)


def test_reference_round_trips_without_pickle(reference: DriftReference) -> None:
    data = reference.to_bytes()
    again = DriftReference.from_bytes(data)
    assert again.sha256() == reference.sha256()
    assert again.metadata_counts == reference.metadata_counts
    assert again.projections is not None and reference.projections is not None
    np.testing.assert_allclose(again.projections, reference.projections)
    assert again.size == 300
    assert set(reference.metadata_counts) == set(METADATA_KEYS)


def test_bad_arguments_are_refused(reference: DriftReference) -> None:
    with pytest.raises(ValueError, match="at least 20"):
        DriftReference.from_observations(_observations(np.random.default_rng(8), 5))
    with pytest.raises(ValueError, match="at least 2"):
        score_window(reference, _observations(np.random.default_rng(8), 1))
    with pytest.raises(ValueError, match="alpha"):
        score_window(reference, _observations(np.random.default_rng(8), 5), alpha=2)


@pytest.mark.parametrize(
    ("age", "band"), [(None, "unknown"), (-1, "unknown"), (0, "0-9"), (65.5, "60-69"), (93, "80+")]
)
def test_age_band(age: float | None, band: str) -> None:
    assert age_band(age) == band


def test_metadata_the_reference_does_not_know_is_not_tested() -> None:
    ref = [Observation({}, o.probabilities, o.features) for o in _observations(np.random.default_rng(9), 60)]
    score = score_window(DriftReference.from_observations(ref), _observations(np.random.default_rng(10), 30))
    assert "metadata" not in score.details and set(score.parts) == {"features", "outputs"}
    assert not score.alarm


def test_the_reference_travels_beside_the_card_and_a_changed_byte_is_refused(
    reference: DriftReference, tmp_path: Path
) -> None:
    entry = save_reference(reference, tmp_path, "bundle", images={"source": "split x", "count": 300})
    assert entry["file"] == "bundle.drift.npz" and entry["size"] == 300
    assert load_reference(tmp_path, entry).sha256() == reference.sha256()
    path = tmp_path / "bundle.drift.npz"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        load_reference(tmp_path, entry)
    with pytest.raises(WeightsError, match="beside the card"):
        load_reference(tmp_path, {**entry, "file": "../x.drift.npz"})


def test_metadata_of_a_header_bins_what_it_compares() -> None:
    header = Dataset()
    header.Manufacturer = "  ACME   Medical "
    header.ViewPosition = "PA"
    header.PatientAge = "067Y"
    header.PatientSex = "F"
    header.ImagerPixelSpacing = [0.139, 0.139]
    header.PhotometricInterpretation = "MONOCHROME1"
    header.BitsStored = 12
    meta = metadata_of(header, "1.2.840.10008.1.2.4.90")
    assert meta == {
        "manufacturer": "ACME Medical",
        "model": "unknown",
        "view": "PA",
        "age_band": "60-69",
        "sex": "F",
        "pixel_spacing": "0.10",
        "photometric_bits": "MONOCHROME1/12",
        "transfer_syntax": "1.2.840.10008.1.2.4.90",
    }
    assert set(metadata_of(object()).values()) == {"unknown"}  # a PNG: nothing to compare
    header.PatientAge = "018M"
    assert metadata_of(header)["age_band"] == "0-9"
