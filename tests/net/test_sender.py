"""net/sender.py against real peers: dcmtk storescp (counts every copy) and Orthanc (C-STORE, STOW-RS)."""

from __future__ import annotations

import logging
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless

from chexnet_dicom.config import NetTimeouts
from chexnet_dicom.errors import TransferError
from chexnet_dicom.net.destination import parse_destination
from chexnet_dicom.net.sender import Delivery, RetryPolicy, send_files, send_with_retry
from chexnet_dicom.testing import synth
from tests.helpers.peers import free_port, orthanc, storescp

pytestmark = pytest.mark.network

FAST = NetTimeouts(acse_timeout=5, dimse_timeout=10, network_timeout=10)
STUDY = "1.2.826.0.1.3680043.8.498.77"


def _files(folder: Path, n: int = 3, *, compressed: bool = False) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        ds = synth.make_dataset(
            synth.chest_phantom((64, 64), seed=i),
            seed=i,
            study_uid=STUDY,
            instance_number=i + 1,
            patient_id="SYN1",
        )
        if compressed:
            ds = synth.encode(ds, JPEG2000Lossless)
        path = folder / f"f{i}.dcm"
        synth.write(ds, path)
        out.append(path)
    return out


def _uids(paths: list[Path]) -> list[str]:
    return sorted(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths)


def test_c_store_each_file_once_streamed_as_is(tmp_path: Path) -> None:
    files = _files(tmp_path / "in", compressed=True)
    with storescp(tmp_path) as scp:
        report = send_files(files, parse_destination(scp.address, calling_ae="CHEXDCM"), timeouts=FAST)
        received = scp.files()
    assert report.ok and len(report.sent) == 3 and report.destination == scp.address
    assert all(d.status == 0 for d in report.deliveries)
    assert len(received) == 3 and _uids(received) == _uids(files)
    # sent as they are: the J2K bytes arrive unchanged (storescp keeps the syntax)
    got = {str(pydicom.dcmread(p).SOPInstanceUID): pydicom.dcmread(p) for p in received}
    for p in files:
        ds = pydicom.dcmread(p)
        assert got[str(ds.SOPInstanceUID)].file_meta.TransferSyntaxUID == JPEG2000Lossless
        assert got[str(ds.SOPInstanceUID)].PixelData == ds.PixelData


def test_c_store_decompresses_for_a_peer_that_takes_only_uncompressed(tmp_path: Path) -> None:
    files = _files(tmp_path / "in", n=2, compressed=True)
    with storescp(tmp_path, syntaxes="") as scp:
        report = send_files(files, parse_destination(scp.address), timeouts=FAST)
        received = scp.files()
    assert report.ok, report.failed
    assert len(received) == 2
    for p in received:
        ds = pydicom.dcmread(p)
        assert not ds.file_meta.TransferSyntaxUID.is_compressed
        src = next(
            pydicom.dcmread(f) for f in files if pydicom.dcmread(f).SOPInstanceUID == ds.SOPInstanceUID
        )
        assert (ds.pixel_array == src.pixel_array).all()


def test_not_dicom_is_a_failed_delivery_not_a_crash(tmp_path: Path) -> None:
    files = _files(tmp_path / "in", n=1)
    junk = tmp_path / "in" / "junk.txt"
    junk.write_text("not DICOM")
    with storescp(tmp_path) as scp:
        report = send_files([junk, *files], parse_destination(scp.address), timeouts=FAST)
        assert len(scp.files()) == 1
    assert [d.ok for d in report.deliveries] == [False, True]
    assert "not a DICOM file" in report.deliveries[0].reason and not report.deliveries[0].retryable


def test_peer_down_is_a_transfer_error(tmp_path: Path) -> None:
    files = _files(tmp_path / "in", n=1)
    with pytest.raises(TransferError, match=r"cannot connect|did not answer"):
        send_files(files, parse_destination(f"NOBODY@127.0.0.1:{free_port()}"), timeouts=FAST)
    sleeps: list[float] = []
    with pytest.raises(TransferError, match="nothing delivered after 3 tries"):
        send_with_retry(
            files,
            parse_destination(f"NOBODY@127.0.0.1:{free_port()}"),
            policy=RetryPolicy(attempts=3, base_s=1, cap_s=1.5),
            timeouts=FAST,
            sleep=sleeps.append,
        )
    assert sleeps == [1.0, 1.5]  # capped exponential backoff


def test_retry_delivers_once_the_peer_is_up(tmp_path: Path) -> None:
    files = _files(tmp_path / "in", n=2)
    port = free_port()
    started: list[object] = []
    peer: dict[str, object] = {}

    def sleep(seconds: float) -> None:
        # the destination comes up during the first backoff
        if not started:
            cm = storescp(tmp_path, port=port)
            peer["scp"] = cm.__enter__()
            peer["cm"] = cm
            started.append(seconds)

    try:
        report = send_with_retry(
            files,
            parse_destination(f"STORESCP@127.0.0.1:{port}"),
            policy=RetryPolicy(3, 0.1, 1),
            timeouts=FAST,
            sleep=sleep,
        )
        scp = peer["scp"]
        assert report.ok and report.attempts == 2
        assert len(scp.files()) == 2  # type: ignore[attr-defined]
    finally:
        if "cm" in peer:
            peer["cm"].__exit__(None, None, None)  # type: ignore[attr-defined]


def test_rejected_association(tmp_path: Path) -> None:
    files = _files(tmp_path / "in", n=1)
    with orthanc(tmp_path, dicomweb=False) as pacs, pytest.raises(TransferError, match="rejected"):
        send_files(files, parse_destination(f"WRONG_AE@127.0.0.1:{pacs.dicom_port}"), timeouts=FAST)


def test_orthanc_c_store_and_stow_rs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a = _files(tmp_path / "a", n=2)
    b = _files(tmp_path / "b", n=3, compressed=True)[2:]  # a third instance of the same study, J2K
    caplog.set_level(logging.DEBUG)
    with orthanc(tmp_path) as pacs:
        r1 = send_files(a, parse_destination(pacs.address), timeouts=FAST)
        r2 = send_files(b, parse_destination(pacs.dicomweb_url), timeouts=FAST)
        assert r1.ok and r2.ok, (r1.failed, r2.failed)
        # a retry of the same files is not a duplicate: Orthanc still holds three instances
        assert send_files(a, parse_destination(pacs.dicomweb_url), timeouts=FAST).ok
        instances = pacs.instances()
        studies = pacs.rest("/studies?expand")
    assert sorted(i["MainDicomTags"]["SOPInstanceUID"] for i in instances) == _uids(a + b)
    assert len(studies) == 1 and studies[0]["MainDicomTags"]["StudyInstanceUID"] == STUDY
    text = caplog.text
    assert STUDY not in text and all(u not in text for u in _uids(a + b))
    assert "Synthetic" not in text


def test_stow_rs_refusal_is_reported_per_instance(tmp_path: Path) -> None:
    good = _files(tmp_path / "in", n=1)
    with orthanc(tmp_path) as pacs:
        report = send_files(good, parse_destination(pacs.dicomweb_url + "/nowhere"), timeouts=FAST)
    assert not report.ok
    assert report.deliveries[0].reason.startswith("STOW-RS answered HTTP 4")
    assert not report.deliveries[0].retryable


def test_c_store_reports_each_file_as_its_response_arrives(tmp_path: Path) -> None:
    """``on_delivered`` runs after each C-STORE response, before the next file is sent."""
    files = _files(tmp_path / "in", n=3)
    events: list[tuple[str, str, int]] = []
    with storescp(tmp_path) as scp:

        def sending(p: Path) -> None:
            events.append(("sending", p.name, len(scp.files())))

        def delivered(d: Delivery) -> None:
            events.append(("delivered", d.path.name, len(scp.files())))

        report = send_files(
            files, parse_destination(scp.address), timeouts=FAST, on_sending=sending, on_delivered=delivered
        )
    assert report.ok
    # strictly interleaved; at each answer the destination holds exactly the files answered so far
    assert events == [
        (kind, f.name, k + (kind == "delivered"))
        for k, f in enumerate(files)
        for kind in ("sending", "delivered")
    ]


def test_stow_rs_reports_each_instance_from_the_response(tmp_path: Path) -> None:
    """STOW-RS: every file is handed over before the one request; ``on_delivered`` per instance result."""
    files = _files(tmp_path / "in", n=2)
    sent: list[str] = []
    done: list[str] = []
    with orthanc(tmp_path) as pacs:
        report = send_files(
            files,
            parse_destination(pacs.dicomweb_url),
            timeouts=FAST,
            on_sending=lambda p: sent.append(p.name),
            on_delivered=lambda d: done.append(d.sop_instance_uid),
        )
    assert report.ok
    assert sent == [f.name for f in files]
    assert sorted(done) == _uids(files)
