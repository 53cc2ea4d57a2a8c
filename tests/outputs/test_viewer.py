"""The results in a real PACS: Orthanc (Debian ``orthanc``) holds them as a radiologist sees them.

The chest files and the results of a default ``chexdcm infer`` run followed by a
``--sc-per-finding`` run are stored in an Orthanc of their own (loopback, ephemeral
ports; its Web Viewer plugin is not needed: ``/instances/{id}/preview`` is core Orthanc).
Read back through the REST API:

* every result lies in the study of its source, and every result series has a SeriesDate;
* exactly one overlay per (source image, finding): the second run adds no copy;
* patient names are decoded: DX_J2K_0Padding's undeclared Windows-1251 name reads as
  Cyrillic in every result;
* each SC as Orthanc renders it is head up (it correlates with ``chexdcm render`` of its
  source, better than the flipped render), and no body pixel lies under text. *Body* is
  the rendered source above its Otsu threshold; the legend's ink is white text on black,
  so a body pixel under text is a white or black preview pixel where the render is not
  (at most 1e-4 of the body is allowed: 966_fixed has 2 such pixels of 3.2 million).

The full run over the seven files (both runs) is ``slow``; the default suite runs the
same checks after one default run of DX_J2K_0Padding alone.
"""

from __future__ import annotations

import io
import json
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from skimage.filters import threshold_otsu

from chexnet_dicom.cli import main
from tests.helpers.doors import RUNTIME
from tests.helpers.peers import orthanc
from tests.helpers.shared import shared_path

RESULT_MODALITIES = ("SR", "OT")


def _post(port: int, data: bytes) -> dict[str, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/instances", data=data, method="POST")
    with urllib.request.urlopen(req, timeout=60) as rsp:
        return dict(json.loads(rsp.read()))


def _infer(folder: Path, out: Path, *extra: str) -> list[Path]:
    code = main(["infer", str(folder), "--out", str(out), *RUNTIME, "--sc-compression", "none", *extra])
    assert code == 0
    return sorted(out.rglob("*.dcm"))


def _check(folder: Path, tmp_path: Path, *, twice: bool) -> None:
    sources = sorted(folder.glob("*.dcm"))
    first = _infer(folder, tmp_path / "default")
    second = _infer(folder, tmp_path / "per-finding", "--sc-per-finding") if twice else []
    local: dict[str, pydicom.Dataset] = {}
    for path in first + second:
        ds = pydicom.dcmread(path)
        local[str(ds.SOPInstanceUID)] = ds
    src_study = {}
    for path in sources:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        src_study[str(ds.SOPInstanceUID)] = str(ds.StudyInstanceUID)
    overlays = {
        uid: (str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID), str(ds.SeriesDescription))
        for uid, ds in local.items()
        if ds.Modality != "SR"
    }
    assert len(set(overlays.values())) == len(overlays), "two overlay objects for one (image, finding)"

    with orthanc(tmp_path, dicomweb=False) as pacs:
        for path in sources + first + second:
            _post(pacs.http_port, path.read_bytes())
        stored = pacs.instances()
        by_uid = {i["MainDicomTags"]["SOPInstanceUID"]: i for i in stored}
        assert set(local) <= set(by_uid)
        stored_overlays = [u for u in by_uid if u in overlays]
        assert len(stored_overlays) == len(overlays)  # the second run re-sent, never added
        for uid in local:
            tags = pacs.rest(f"/instances/{by_uid[uid]['ID']}/simplified-tags")
            assert tags["StudyInstanceUID"] in set(src_study.values())
            series = pacs.rest(f"/series/{by_uid[uid]['ParentSeries']}")
            assert series["MainDicomTags"].get("SeriesDate"), "a result series without SeriesDate"
            assert series["MainDicomTags"].get("Modality") in RESULT_MODALITIES
        dx = [p for p in sources if p.name == "DX_J2K_0Padding.dcm"]
        if dx:
            raw = pydicom.dcmread(dx[0], stop_before_pixels=True, force=True)
            expected = bytes(raw.PatientName.original_string).decode("cp1251")
            study = str(raw.StudyInstanceUID)
            names = {
                pacs.rest(f"/instances/{by_uid[u]['ID']}/simplified-tags")["PatientName"]
                for u, ds in local.items()
                if str(ds.StudyInstanceUID) == study
            }
            assert names == {expected}, names
            assert any("\u0400" <= ch <= "\u04ff" for ch in expected)
        for uid in overlays:
            png = pacs.rest_bytes(f"/instances/{by_uid[uid]['ID']}/preview")
            rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            # siim_6904 and its fake MONOCHROME1 twin share a SOP Instance UID; both render alike
            source = next(p for p in sources if _sop(p) == overlays[uid][0])
            render_path = tmp_path / f"render-{source.stem}.png"
            if not render_path.exists():
                assert main(["render", str(source), "-o", str(render_path)]) == 0
            rendered = np.asarray(Image.open(render_path).convert("L"), np.float64)
            _check_head_up_and_clear(rgb, rendered)


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID)


def _check_head_up_and_clear(rgb: np.ndarray, rendered: np.ndarray) -> None:
    rows, cols = rendered.shape
    assert rgb.shape[0] == rows and rgb.shape[1] > cols, "the legend panel lies beside the image"
    area = rgb[:, :cols].astype(np.int16)
    grey = area.mean(axis=-1)
    clear = (area.max(axis=-1) - area.min(axis=-1)) <= 12  # away from the drawn map
    upright = np.corrcoef(grey[clear], rendered[clear])[0, 1]
    flipped = np.corrcoef(grey[clear], np.flipud(rendered)[clear])[0, 1]
    assert upright > 0.9 and upright > flipped + 0.3, (upright, flipped)
    body = rendered > threshold_otsu(rendered)
    # the legend's ink is white text on a black panel: over the body it would show as
    # white or black pixels where the render is not (the heatmap only adds colour)
    ink = (area.min(axis=-1) >= 250) | (area.max(axis=-1) <= 5)
    under = body & ink & (np.abs(grey - rendered) > 24)
    assert body.sum() > 0.1 * body.size
    assert under.sum() <= 1e-4 * body.sum(), f"text drawn over the body: {int(under.sum())} px"


def test_one_file_in_orthanc(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copyfile(shared_path("dicom", "chest", "DX_J2K_0Padding.dcm"), folder / "DX_J2K_0Padding.dcm")
    _check(folder, tmp_path, twice=False)


@pytest.mark.slow
def test_the_seven_chest_files_in_orthanc(tmp_path: Path) -> None:
    _check(shared_path("dicom", "chest"), tmp_path, twice=True)


def test_the_checks_see_a_flip_and_text_over_the_body() -> None:
    from PIL import ImageDraw

    yy, xx = np.mgrid[0:200, 0:160]
    rendered = np.where(
        np.hypot(yy - 110, xx - 80) < 60, 90.0 + yy * 0.6, 10.0
    )  # a body, graded top to bottom
    clean = np.zeros((200, 260, 3), np.uint8)
    clean[:, :160] = rendered.astype(np.uint8)[..., None]
    _check_head_up_and_clear(clean, rendered)
    with pytest.raises(AssertionError):
        _check_head_up_and_clear(np.ascontiguousarray(clean[::-1]), rendered)
    texted = Image.fromarray(clean)
    ImageDraw.Draw(texted).text((40, 100), "RESEARCH USE ONLY", fill=(255, 255, 255))
    with pytest.raises(AssertionError, match="over the body"):
        _check_head_up_and_clear(np.asarray(texted), rendered)
