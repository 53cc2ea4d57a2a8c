"""Shared helpers of the outputs tests: sources, predictions, cards, validators."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from chexnet_dicom.dicom.pixels import DisplayImage
from chexnet_dicom.dicom.resize import resize_display
from chexnet_dicom.dicom.uids import derive_uid
from chexnet_dicom.model.card import ModelCard, OperatingPoint, Preprocessing
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.model.prediction import Prediction
from chexnet_dicom.results import ImageResult
from chexnet_dicom.testing.synth import make_dataset
from tests.helpers.shared import require_tool, required, shared_path


def make_card(sha: str = "ab" * 32, *, threshold: float = 0.5, cam_threshold: float = 0.5) -> ModelCard:
    """A real model card with uniform operating points."""
    return ModelCard(
        name="chexnet-test",
        version="1.2.3",
        weights_sha256=sha,
        cam_threshold=cam_threshold,
        operating_points={label: OperatingPoint(threshold=threshold, method="test") for label in LABELS},
    )


def make_prediction(card: ModelCard, probabilities: np.ndarray, cams: np.ndarray | None = None) -> Prediction:
    """A Prediction as the predictor returns it."""
    return Prediction(
        probabilities=np.asarray(probabilities, dtype=np.float64),
        thresholds=np.array([card.threshold(label) for label in LABELS]),
        model_name=card.name,
        model_version=card.version,
        weights_sha256=card.weights_sha256,
        cams=cams,
    )


def make_result(
    ds: Dataset,
    card: ModelCard,
    probabilities: np.ndarray,
    *,
    heat: np.ndarray | None = None,
    display: np.ndarray | DisplayImage | None = None,
    flags: tuple[str, ...] = (),
) -> ImageResult:
    """An analysed image whose heatmaps on the source grid are (close to) ``heat``.

    ``heat`` is (14, Rows, Columns) in [0, 1]; it becomes the CAMs of a model whose input
    is a square ``side x side`` frame (``side`` = the source's larger side, at most 512),
    so :meth:`ImageResult.heatmap` maps it back through the real CAM geometry.  The
    display image is mid-grey unless given (an array on the source grid, or a
    :class:`DisplayImage` as ``load_image`` returns it); ``flags`` are its provenance flags.
    """
    rows, cols = int(ds.Rows), int(ds.Columns)
    if display is None:
        display = np.full((rows, cols), 0.5, np.float32)
    if not isinstance(display, DisplayImage):
        display = DisplayImage(
            image=np.asarray(display, np.float32),
            source_shape=(rows, cols),
            provenance={"flags": list(flags)},
        )
    side = min(512, max(rows, cols, 16))
    cams = None
    if heat is not None:
        cams = np.stack([resize_display(h, (side, side)) for h in np.asarray(heat, np.float32)])
    return ImageResult(
        path="",
        dataset=ds,
        display=display,
        prediction=make_prediction(card, probabilities, cams),
        preprocessing=Preprocessing(resize=side, input_size=side),
    )


def make_dx(
    *,
    rows: int = 96,
    cols: int = 80,
    name: str = "Doe^Jane",
    charset: str | None = None,
    seed: str = "dx",
    study: str = "study-1",
) -> Dataset:
    """A small DX For Presentation dataset (MONOCHROME2, 8-bit) from :mod:`chexnet_dicom.testing.synth`.

    Identity comes from ``seed`` (the instance) and ``study``, so tests can build several
    instances of one study, or of different studies.
    """
    pixels = (np.arange(rows * cols) % 251).astype(np.uint8).reshape(rows, cols)
    return make_dataset(
        pixels,
        modality="DX",
        bits_stored=8,
        patient_name=name,
        patient_id="PID-1",
        specific_character_set=charset,
        study_uid=derive_uid("tests-outputs", study),
        series_uid=derive_uid("tests-outputs", study, "series"),
        sop_uid=derive_uid("tests-outputs", seed, "sop"),
        patient_orientation=("L", "F"),
    )


def real_source(name: str) -> Dataset:
    """A real chest file from ../shared/data/dicom/chest (skips when absent)."""
    return pydicom.dcmread(shared_path("dicom", "chest", name), force=True)


def blob(rows: int, cols: int, cy: float, cx: float, sigma: float) -> np.ndarray:
    """A Gaussian blob in [0, 1] on a (rows, cols) grid."""
    yy, xx = np.mgrid[:rows, :cols]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * sigma**2)).astype(np.float32)


def dciodvfy_errors(path: Path) -> tuple[list[str], list[str]]:
    """Run dicom3tools' dciodvfy; return (errors, warnings)."""
    exe = require_tool("dciodvfy")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, errors="replace", timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    return errors, warnings


#: PixelMed's jar as Debian's ``pixelmed-apps`` installs it.
PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
#: The JDK's default XPath limits stop the validator's stylesheets part way.
_PIXELMED_JAVA_OPTS = (
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
)
#: The one warning PixelMed gives on our SRs, and why it is the validator's gap, not ours:
#: PS3.16 TID 1501 (Measurement and Qualitative Evaluation Group) row 11 has a
#: qualitative evaluation as a CODE content item (concept: the finding, value: present or
#: absent), which is how each finding's result is coded.  PixelMed's TID 1501 (its 2022
#: template tables) stops before that row, so it reports the item as "not in template"
#: (DCMTK's TID1501_MeasurementGroup::addQualitativeEvaluation writes the same item).
#: The same warning falls on a TID 1410 region group's "Geometric purpose of region"
#: CODE (row 3c): PixelMed applies TID 1410 only when the report has exactly one Image
#: Region (a count over all groups, see chexnet_dicom/outputs/sr.py), so with the two
#: regions of each present finding it checks the region groups against TID 1501.
PIXELMED_TID1501_GAP = re.compile(
    r'^Warning: [0-9.]+: /CONTAINER \(126000,DCM,"Imaging Measurement Report"\)'
    r'/CONTAINER \(126010,DCM,"Imaging Measurements"\)/CONTAINER \(125007,DCM,"Measurement Group"\)'
    r"/CODE \([^)]*\): Content Item not in template$"
)


def pixelmed_sr_reports(paths: list[Path]) -> dict[Path, tuple[list[str], list[str]]]:
    """Run PixelMed's DicomSRValidator on SR files, in one JVM; return path -> (errors, warnings).

    PixelMed's own ``main`` validates one file per JVM and spends most of its 15 s
    starting; ``tests/helpers/PixelmedSRBatch.java`` (run as a single-file source
    program, which needs a JDK) validates them all with one validator.
    """
    java = require_tool("java")
    if not PIXELMED_JAR.is_file():
        msg = f"PixelMed not installed ({PIXELMED_JAR}; Debian package pixelmed-apps, see .ci/run)"
        if required():
            pytest.fail(msg + "; CHEXDCM_REQUIRE_SHARED=1 requires it")
        pytest.skip(msg)
    source = Path(__file__).with_name("PixelmedSRBatch.java")
    proc = subprocess.run(
        [java, *_PIXELMED_JAVA_OPTS, "-cp", str(PIXELMED_JAR), str(source), *map(str, paths)],
        capture_output=True, text=True, errors="replace", timeout=1800, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    reports: dict[Path, tuple[list[str], list[str]]] = {}
    current: Path | None = None
    for line in proc.stdout.splitlines():
        if line.startswith("=== FILE "):
            current = Path(line.removeprefix("=== FILE "))
            reports[current] = ([], [])
        elif current is not None and line.startswith("Error"):
            reports[current][0].append(line)
        elif current is not None and line.startswith("Warning"):
            reports[current][1].append(line)
    assert set(reports) == set(paths), proc.stdout[-2000:] + proc.stderr[-2000:]
    return reports


def scoord_regions(sr: object) -> list[np.ndarray]:
    """Every SCOORD polygon of an SR content tree, as (N, 2) (column, row) points."""
    found: list[np.ndarray] = []

    def walk(items: object) -> None:
        for item in items or []:  # type: ignore[attr-defined]
            if getattr(item, "ValueType", "") == "SCOORD":
                found.append(np.asarray(item.GraphicData, dtype=np.float64).reshape(-1, 2))
            walk(getattr(item, "ContentSequence", None))

    walk(getattr(sr, "ContentSequence", None))
    return found
