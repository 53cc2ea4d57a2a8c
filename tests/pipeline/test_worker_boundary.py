"""What crosses a process boundary is plain data: every file of every corpus, and the
implicit-VR VOI LUT file that a live dataset could not carry through a decode worker."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import ImplicitVRLittleEndian

from chexnet_dicom.cli import main
from chexnet_dicom.config import IngestConfig
from chexnet_dicom.dicom.load import ImageFile
from chexnet_dicom.dicom.pixels import DisplayImage
from chexnet_dicom.dicom.study import Instance, read_instance
from chexnet_dicom.dicom.walk import iter_files
from chexnet_dicom.model.card import ModelCard
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.pipeline import decode_for_model, worker_input
from chexnet_dicom.testing.synth import make_dataset, write
from tests.helpers.batch import BATCH_ARGS, predictions_by_sop
from tests.helpers.bundles import make_bundle
from tests.helpers.shared import REPO, shared_path

CORPORA = ("chest", "other_xray", "broken", "non_xray")


@pytest.fixture(scope="module")
def card_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"))


def _roundtrip(obj: object) -> object:
    return pickle.loads(pickle.dumps(obj))


def _corpus_files(which: str) -> list[str]:
    root = REPO / "sample_data" if which == "sample" else shared_path("dicom", which)
    files = [e.path for e in iter_files([root]) if e.reason is None]
    assert files, f"no files found in {root}"
    return files


@pytest.mark.parametrize("which", ("sample", *CORPORA))
@pytest.mark.parametrize("keep_raw", (False, True), ids=("path", "raw-header"))
def test_what_a_worker_receives_and_returns_pickles_for_every_file(
    which: str, keep_raw: bool, card_path: Path
) -> None:
    cfg = IngestConfig()
    pre = ModelCard.read(card_path).preprocessing
    assert _roundtrip((cfg, pre)) == (cfg, pre)
    selected = 0
    for path in _corpus_files(which):
        got = read_instance(path, cfg, keep_raw=keep_raw)
        if not isinstance(got, tuple):
            continue  # not an instance: nothing goes to a worker
        inst: Instance = got[0]
        sent = worker_input(inst)
        assert isinstance(sent, ImageFile)
        back = _roundtrip(sent)
        assert back == sent
        assert (sent.header is not None) == (keep_raw and inst.scanned.location is not None)
        if not inst.accepted:
            continue  # the scan does not select it: it is never decoded
        selected += 1
        try:
            returned: object = decode_for_model(back, cfg, pre)
        except Exception as exc:  # a worker's error comes back pickled too
            again = _roundtrip(exc)
            assert type(again) is type(exc) and str(again) == str(exc)
            continue
        display, x = _roundtrip(returned)  # type: ignore[misc]
        assert isinstance(display, DisplayImage) and isinstance(x, np.ndarray)
        local_display, local_x = decode_for_model(inst.scanned, cfg, pre)  # the in-process path
        np.testing.assert_array_equal(x, local_x)
        assert display.provenance == local_display.provenance
    if which in ("sample", "chest"):
        assert selected, "the corpus has frontal chest images"


@pytest.fixture(scope="module")
def voi_lut_legacy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An NIH radiograph as a legacy file: implicit VR, no preamble, no file meta, a VOI LUT Sequence."""
    png = shared_path("nih", "images", "00000075_000.png")
    img = np.asarray(Image.open(png).convert("L"), dtype=np.float32) / 255.0
    ds = make_dataset(img[::4, ::4], voi_lut=True)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    folder = tmp_path_factory.mktemp("voi_lut_legacy")
    write(ds, folder / "legacy.dcm", with_meta=False)
    assert (folder / "legacy.dcm").read_bytes()[:4] != b"\0\0\0\0"  # no preamble
    return folder


def _infer(folder: Path, out: Path, card: Path, *extra: str) -> dict[str, float]:
    rc = main(
        ["infer", str(folder), "--out", str(out), "--weights", str(card), "--backend", "onnxruntime", *extra]
    )
    assert rc == 0
    result = json.loads((out / "result.json").read_text())
    assert not result["skipped"], result["skipped"]
    (image,) = result["images"]
    return dict(image["probabilities"])


def test_the_voi_lut_legacy_file_gives_the_same_result_in_a_decode_worker(
    voi_lut_legacy: Path, card_path: Path, tmp_path: Path
) -> None:
    in_process = _infer(voi_lut_legacy, tmp_path / "a", card_path)
    worker = _infer(voi_lut_legacy, tmp_path / "b", card_path, "--workers", "1")
    assert worker.keys() == in_process.keys()
    np.testing.assert_allclose(list(worker.values()), list(in_process.values()), atol=1e-6)
    assert (
        main(
            [
                "batch",
                str(voi_lut_legacy),
                "--out",
                str(tmp_path / "c"),
                "--weights",
                str(card_path),
                *BATCH_ARGS,
            ]
        )
        == 0
    )
    (batch,) = predictions_by_sop(tmp_path / "c").values()
    np.testing.assert_allclose(batch, [in_process[k] for k in LABELS], atol=1e-6)
