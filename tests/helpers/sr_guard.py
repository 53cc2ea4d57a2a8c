"""The same-SR guard: deterministic SR inputs on the real chest files, and a canonical digest.

Speed work on :func:`chexnet_dicom.outputs.sr.build_sr` must not change the document.
:func:`guard_cases` builds, for each real chest file of ``../shared/data/dicom/chest``, one
study's inputs with the real header and the bundled demo card (its operating points and
validation metrics, so unreliable findings are marked), fixed probabilities (some
findings present, some absent), a heatmap with two blobs (regions) and an OOD score.
siim_6904's study also lists its fake MONOCHROME1 twin as a skipped duplicate.

:func:`sr_digest` hashes the SR as written (Part 10 bytes, highdicom's clock frozen by
:func:`frozen_clock`) and each top-level attribute, so a failing comparison names the
attributes that changed.  Only hashes are stored (never the real files' headers):
``tests/reference/make_sr_reference.py`` writes ``tests/reference/sr_reference.json``.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import types
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from chexnet_dicom.dicom.pixels import DisplayImage
from chexnet_dicom.dicom.reasons import DUPLICATE_INSTANCE
from chexnet_dicom.dicom.study import Skipped
from chexnet_dicom.model.card import ModelCard, Preprocessing
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.model.resolve import DEMO_CARD
from chexnet_dicom.results import ImageResult
from tests.helpers.outputs import blob, make_prediction
from tests.helpers.shared import CHEST_FILES

__all__ = ["CHEST_FILES", "GuardCase", "frozen_clock", "guard_cases", "sr_digest"]

#: siim_6904's skipped duplicate in its guard study.
_TWIN = "siim_6904_fake_monochrome1.dcm"
#: The frozen clock of highdicom's Instance Creation / Content Date and Time.
FROZEN = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901)


@dataclass(frozen=True)
class GuardCase:
    """One study's SR inputs."""

    name: str
    results: tuple[ImageResult, ...]
    card: ModelCard
    skipped: tuple[Skipped, ...] = ()


def _header(folder: Path, name: str) -> Dataset:
    return pydicom.dcmread(folder / name, force=True, stop_before_pixels=True)


def guard_cases(folder: Path) -> list[GuardCase]:
    """The guard's studies, one per real chest file in ``folder``."""
    card = ModelCard.read(DEMO_CARD)
    cases = []
    for n, name in enumerate(CHEST_FILES):
        ds = _header(folder, name)
        rows, cols = int(ds.Rows), int(ds.Columns)
        # thresholds +- a margin: findings alternate present / absent, shifted per file
        thresholds = np.array([card.threshold(label) for label in LABELS])
        signs = np.array([1.0 if (k + n) % 3 == 0 else -1.0 for k in range(len(LABELS))])
        probs = np.clip(thresholds + signs * (0.01 + 0.003 * np.arange(len(LABELS))), 0.0, 1.0)
        # the CAMs on the model's square input grid (as make_result makes them), two blobs
        side = min(512, max(rows, cols, 16))
        cam = np.maximum(
            blob(side, side, 0.35 * side, 0.3 * side, side / 10),
            0.8 * blob(side, side, 0.6 * side, 0.7 * side, side / 14),
        )
        result = ImageResult(
            path="",
            dataset=ds,
            display=DisplayImage(
                image=np.full((rows, cols), 0.5, np.float32), source_shape=(rows, cols), provenance={}
            ),
            prediction=make_prediction(card, probs, np.repeat(cam[None], len(LABELS), axis=0)),
            preprocessing=Preprocessing(resize=side, input_size=side),
        )
        if n % 2 == 0:  # an OOD group on every other study
            result = replace(
                result,
                prediction=replace(
                    result.prediction, ood_score=0.25 + 0.1 * n, ood_threshold=0.5, ood_method="test"
                ),
            )
        skipped: tuple[Skipped, ...] = ()
        if name == "siim_6904.dcm":
            twin = _header(folder, _TWIN)
            skipped = (
                Skipped(
                    path="", status="skipped", reason=DUPLICATE_INSTANCE, message="duplicate", dataset=twin
                ),
            )
        cases.append(GuardCase(name=name, results=(result,), card=card, skipped=skipped))
    return cases


def _frozen_datetime_module() -> types.ModuleType:
    class _Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> _Frozen:
            return cls.combine(FROZEN.date(), FROZEN.time(), tz)

    shim = types.ModuleType("datetime")
    shim.__dict__.update(datetime.__dict__)
    shim.datetime = _Frozen  # type: ignore[attr-defined]
    return shim


@contextlib.contextmanager
def frozen_clock() -> Iterator[None]:
    """highdicom's ``datetime.datetime.now()`` returns :data:`FROZEN` inside the block.

    (instance creation, content and contribution date and time)
    """
    import highdicom.base
    import highdicom.base_content
    import highdicom.sr.sop

    modules = (highdicom.base, highdicom.base_content, highdicom.sr.sop)
    saved = [m.datetime for m in modules]
    shim = _frozen_datetime_module()
    try:
        for m in modules:
            m.datetime = shim  # type: ignore[attr-defined]
        yield
    finally:
        for m, old in zip(modules, saved, strict=True):
            m.datetime = old  # type: ignore[attr-defined]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sr_digest(sr: Dataset) -> dict[str, Any]:
    """SHA-256 of the SR's Part 10 bytes and of each top-level attribute's encoding."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, sr, enforce_file_format=True)
    elements = {}
    for elem in sr:
        one = DicomBytesIO()
        one.is_little_endian, one.is_implicit_VR = True, False
        write_dataset(one, sr[elem.tag : elem.tag + 1])
        elements[elem.keyword or str(elem.tag)] = _sha(one.getvalue())
    return {"bytes": _sha(buffer.getvalue()), "elements": elements}
