"""The warm-up of a long-running door: one tiny real study through every stage, then discarded."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

import chexnet_dicom.pipeline.warm as warm
import chexnet_dicom.pipeline.write as write_module
from chexnet_dicom.config import OutputOptions
from chexnet_dicom.dicom.study import scan
from chexnet_dicom.model.torch_backend import TorchPredictor
from chexnet_dicom.pipeline import results_for_paths
from tests.helpers.bundles import make_bundle


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> TorchPredictor:
    return TorchPredictor.from_card(make_bundle(tmp_path_factory.mktemp("bundle")), device="cpu")


def test_the_tiny_study_is_a_real_one_image_study(tmp_path: Path, predictor: TorchPredictor) -> None:
    path = warm.tiny_study(tmp_path)
    found = scan([path])
    assert len(found.studies) == 1 and len(found.studies[0].selected) == 1
    (result,) = results_for_paths(found, predictor)
    assert not result.failed and len(result.images) == 1
    assert result.images[0].display.image.shape[:2] == (warm.TINY, warm.TINY)


def test_warm_up_builds_and_writes_the_tiny_study_with_one_finding_present(
    predictor: TorchPredictor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[Any, list[str], list[Path]]] = []
    real = write_module.build_and_write

    def spy(result: Any, out_dir: Any, options: Any = None, previous: Any = None) -> Any:
        done = real(result, out_dir, options, previous)
        files = sorted(Path(out_dir).iterdir())
        seen.append((result, [str(pydicom.dcmread(p).Modality) for p in files if p.suffix == ".dcm"], files))
        return done

    monkeypatch.setattr(write_module, "build_and_write", spy)
    options = OutputOptions(previews=False)
    with caplog.at_level(logging.WARNING, logger=warm.__name__):
        spent = warm.warm_result_stages(predictor, options)
    assert spent > 0 and not caplog.records
    ((result, modalities, files),) = seen
    assert int(np.sum(result.images[0].prediction.present)) == 1
    assert sorted(modalities) == ["OT", "SR"]  # the SR and the overlay of the present finding
    assert files and not any(p.exists() for p in files)  # written into a temporary folder, then removed


def test_a_failing_warm_up_is_logged_and_the_door_goes_on(
    predictor: TorchPredictor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(warm, "_tiny_build", broken)
    with caplog.at_level(logging.WARNING, logger=warm.__name__):
        warm.warm_result_stages(predictor)
    assert any("warm-up failed" in r.getMessage() for r in caplog.records)

    def out_of_memory(*_a: Any, **_k: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(warm, "_tiny_build", out_of_memory)
    with pytest.raises(MemoryError):
        warm.warm_result_stages(predictor)


def test_the_warm_module_does_not_import_the_test_kit() -> None:
    tree = ast.parse(Path(warm.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert names and not any(m.startswith("chexnet_dicom.testing") for m in names)
