"""``[outputs] ood = "withhold"``: an out-of-distribution image's SR reports no finding and says why.

* synthetic (default suite): under "withhold" a flagged image keeps only its score group,
  the SR says why in a Findings withheld text, the SC draws no map and its legend says
  the same; an image below its threshold, or without a score, gives exactly the "flag"
  outputs; the "flag" SC legend shows the score and the flag;
* real (``../shared/data/dicom/other_xray``, gate bypassed as ``benchmarks/ood.py`` does:
  the file is loaded and predicted directly): the demo model flags a dog's lateral thorax,
  and its withheld SR and SC pass dciodvfy with 0 errors; (slow) every flagged non-chest
  radiograph's withheld SR passes PixelMed's DicomSRValidator with 0 errors.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from pydicom.dataset import Dataset

from chexnet_dicom.config import IngestConfig, OutputOptions
from chexnet_dicom.model.backends import load_predictor
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.model.resolve import DEMO_CARD
from chexnet_dicom.outputs.build import StudyOutputs, build_outputs
from chexnet_dicom.outputs.ood_items import legend_line, withheld_legend_lines, withheld_reason, withholds
from chexnet_dicom.outputs.sc import image_area, legend_lines
from chexnet_dicom.outputs.write import write_outputs
from chexnet_dicom.pipeline.stages import analysis_preprocessing, load_for_model
from chexnet_dicom.results import ImageResult, StudyResult
from tests.helpers.decode import roundtrip
from tests.helpers.outputs import (
    PIXELMED_TID1501_GAP,
    blob,
    dciodvfy_errors,
    make_card,
    make_dx,
    make_result,
    pixelmed_sr_reports,
)

THRESHOLD = 10.0


def _image(score: float | None, *, seed: str = "dx") -> ImageResult:
    card = make_card()
    probs = np.full(14, 0.2)
    probs[LABELS.index("Effusion")] = 0.9  # one present finding, drawn under "flag"
    heat = np.stack([blob(64, 64, 30, 30, 8)] * 14)
    res = make_result(make_dx(rows=64, cols=64, seed=seed), card, probs, heat=heat)
    if score is None:
        return res
    pred = dataclasses.replace(
        res.prediction, ood_score=score, ood_threshold=THRESHOLD, ood_method="mahalanobis", ood_note=""
    )
    return dataclasses.replace(res, prediction=pred)


def _outputs(images: list[ImageResult], policy: Literal["flag", "withhold"]) -> StudyOutputs:
    study = StudyResult(
        study_uid=str(images[0].dataset.StudyInstanceUID), card=make_card(), images=tuple(images)
    )
    return build_outputs(study, OutputOptions(ood=policy))


def _cv(code: Dataset) -> str:
    """A code's value (long SNOMED CT values are in LongCodeValue)."""
    return str(code.get("CodeValue") or code.get("LongCodeValue") or "")


def _groups(sr: Dataset) -> list[str]:
    """Finding type code of each measurement group of the SR."""
    found = []
    for item in roundtrip(sr).ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeMeaning != "Imaging Measurements":
            continue
        for group in item.ContentSequence:
            for row in group.ContentSequence:
                if _cv(row.ConceptNameCodeSequence[0]) in ("121071", "G-C0E3"):  # Finding (DCM / SRT)
                    found.append(_cv(row.ConceptCodeSequence[0]))
    return found


def _texts(sr: Dataset, code: str) -> list[str]:
    container = next(
        i
        for i in roundtrip(sr).ContentSequence
        if i.ConceptNameCodeSequence[0].CodeMeaning == "Qualitative Evaluations"
    )
    return [str(i.TextValue) for i in container.ContentSequence if _cv(i.ConceptNameCodeSequence[0]) == code]


def _coloured(rgb: np.ndarray) -> int:
    rgb = rgb.astype(np.int16)
    return int(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 12).sum())


def test_a_flagged_image_is_withheld_and_the_sr_and_legend_say_why() -> None:
    flagged = _image(12.5)
    withheld, flag = _outputs([flagged], "withhold"), _outputs([flagged], "flag")
    assert withheld.sr is not None and flag.sr is not None
    # flag: 14 finding groups + the score group + the two regions of the present finding
    # (Effusion); withhold: the score group only
    assert len(_groups(flag.sr)) == 17 and _groups(withheld.sr) == ["OOD_INPUT"]
    reason = withheld_reason(flagged.prediction)
    why = _texts(withheld.sr, "FINDINGS_WITHHELD")
    assert len(why) == 1 and why[0].endswith(reason) and "12.5" in why[0]
    assert _texts(withheld.sr, "121111")[0].startswith("No findings reported")  # Summary
    assert not _texts(flag.sr, "FINDINGS_WITHHELD")
    assert withheld.sr.SOPInstanceUID != flag.sr.SOPInstanceUID  # another document, another UID
    # the SC draws nothing on the image and its legend says why; "flag" draws Effusion
    (name_w, sc_w), (name_f, sc_f) = withheld.overlays[0], flag.overlays[0]
    rows, cols = image_area(flagged)
    assert name_w == "sc-1-none.dcm" and name_f == "sc-1-effusion.dcm"
    assert _coloured(sc_w.pixel_array[:rows, :cols]) == 0 < _coloured(sc_f.pixel_array[:rows, :cols])
    assert "withheld" in sc_w.ImageComments and sc_w.SOPInstanceUID != sc_f.SOPInstanceUID
    lines = withheld_legend_lines(flagged.prediction)
    assert reason in lines and legend_line(flagged.prediction) in lines
    assert not any("Effusion" in line for line in lines)
    np.testing.assert_array_equal(withheld.previews[0][1], sc_w.pixel_array)
    # the sidecar keeps the probabilities for the record and says they are withheld
    assert withheld.sidecar["images"][0]["ood"]["findings_withheld"] is True  # type: ignore[index]
    assert flag.sidecar["images"][0]["ood"]["findings_withheld"] is False  # type: ignore[index]


def test_an_image_below_its_threshold_or_without_a_score_is_never_withheld() -> None:
    # no score (a card without reference statistics): nothing says it is out of distribution
    assert not withholds(_image(None).prediction, "withhold")
    assert withholds(_image(12.5).prediction, "withhold") and not withholds(_image(12.5).prediction, "flag")
    image = _image(3.0)  # below its threshold: exactly the "flag" outputs
    withheld, flag = _outputs([image], "withhold"), _outputs([image], "flag")
    assert withheld.sr is not None and flag.sr is not None
    assert withheld.sr.SOPInstanceUID == flag.sr.SOPInstanceUID
    assert _groups(withheld.sr) == _groups(flag.sr)
    assert [n for n, _ in withheld.overlays] == [n for n, _ in flag.overlays] == ["sc-1-effusion.dcm"]
    np.testing.assert_array_equal(withheld.overlays[0][1].pixel_array, flag.overlays[0][1].pixel_array)


def test_a_mixed_study_reports_the_image_in_distribution_only() -> None:
    inside, outside = _image(3.0, seed="in"), _image(50.0, seed="out")
    out = _outputs([inside, outside], "withhold")
    assert out.sr is not None
    # one image's 14 finding groups and its Effusion's two regions, and both score groups
    assert _groups(out.sr).count("OOD_INPUT") == 2 and len(_groups(out.sr)) == 14 + 2 + 2
    summary = _texts(out.sr, "121111")[0]
    assert "1 image(s) reported (1 of 2 withheld)" in summary
    why = _texts(out.sr, "FINDINGS_WITHHELD")
    assert len(why) == 1 and why[0].startswith("image 2 ")
    assert [n for n, _ in out.overlays] == ["sc-1-effusion.dcm", "sc-2-none.dcm"]


def test_the_flag_legend_shows_the_score_and_the_flag() -> None:
    card = make_card()
    for score, verdict in ((12.5, "OUT-OF-DISTRIBUTION"), (3.0, "In distribution")):
        image = _image(score)
        lines = legend_lines(image, card, "Effusion")
        line = legend_line(image.prediction)
        assert line in lines and line.startswith(verdict) and f"{score:.3g}" in line
    assert legend_line(_image(None).prediction) in legend_lines(_image(None), card, "Effusion")


def _real(name: str) -> ImageResult:
    """A non-chest radiograph, loaded and predicted directly (the gate bypassed, as in ``benchmarks/ood.py``)."""
    from tests.helpers.shared import shared_path

    path = shared_path("dicom", "other_xray", name)
    predictor = load_predictor(DEMO_CARD, device="cpu")
    pre = analysis_preprocessing(predictor)
    loaded, x = load_for_model(path, IngestConfig(), pre)
    return ImageResult(
        path=str(path),
        dataset=loaded.dataset,
        display=loaded.display,
        prediction=predictor.predict(x),
        preprocessing=pre,
    )


def _real_outputs(image: ImageResult, folder: Path) -> tuple[StudyOutputs, list[Path]]:
    study = StudyResult(
        study_uid=str(image.dataset.StudyInstanceUID), card=load_predictor(DEMO_CARD).card, images=(image,)
    )
    out = build_outputs(study, OutputOptions(ood="withhold"))
    return out, write_outputs(out, folder)


@pytest.mark.filterwarnings("ignore::UserWarning")  # the file's own invalid UIDs
def test_a_real_non_chest_radiograph_is_withheld_and_dciodvfy_finds_no_error(tmp_path: Path) -> None:
    image = _real("DX_dog_lateral_thorax.dcm")
    assert image.prediction.out_of_distribution is True, image.prediction.ood_dict()
    out, written = _real_outputs(image, tmp_path)
    assert out.sr is not None and _groups(out.sr) == ["OOD_INPUT"]
    assert _texts(out.sr, "FINDINGS_WITHHELD")[0].endswith(withheld_reason(image.prediction))
    for path in written:
        if path.suffix == ".dcm":
            errors, _ = dciodvfy_errors(path)
            assert errors == [], f"{path.name}: {errors}"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_withheld_srs_of_real_non_chest_radiographs_pass_pixelmed(tmp_path: Path) -> None:
    from tests.helpers.shared import shared_path

    srs = []
    for f in sorted(shared_path("dicom", "other_xray").glob("*.dcm")):
        image = _real(f.name)
        if not image.prediction.out_of_distribution:
            continue  # reported as in distribution: nothing withheld (benchmarks/ood.py lists it)
        out, written = _real_outputs(image, tmp_path / f.stem)
        assert out.sr is not None and _groups(out.sr) == ["OOD_INPUT"], f.name
        srs.append(next(p for p in written if p.name == "sr.dcm"))
    assert len(srs) >= 5  # the demo model flags 6 of the 7
    for path, (errors, warnings) in pixelmed_sr_reports(srs).items():
        assert errors == [], f"{path.parent.name}: {errors}"
        assert all(PIXELMED_TID1501_GAP.match(w) for w in warnings), f"{path.parent.name}: {warnings}"


def test_the_findings_table_says_which_images_are_withheld() -> None:
    from chexnet_dicom.cli.infer import _table

    image = _image(12.5)
    study = StudyResult(study_uid=str(image.dataset.StudyInstanceUID), card=make_card(), images=(image,))
    withheld = _table(study, make_card(), 1, 1, "withhold")
    assert "OUT-OF-DISTRIBUTION (findings withheld from the SR and SC" in withheld
    assert "withheld" not in _table(study, make_card(), 1, 1, "flag")
