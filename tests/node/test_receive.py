"""The node's receive path with real dcmtk peers: services, syntaxes, durability, duplicates, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from chexnet_dicom.outputs.identity import MANUFACTURER
from chexnet_dicom.testing import synth
from tests.helpers.node import Listener, dcmsend, dcmtk, start_listener, storescu

pytestmark = pytest.mark.network

STUDY = "1.2.826.0.1.3680043.8.498.77"

DX_PROC = "1.2.840.10008.5.1.4.1.1.1.1.1"


def _image(folder: Path, name: str, seed: int, **kw: object) -> Path:
    ds = synth.make_dataset(synth.chest_phantom((96, 80), seed=seed), seed=seed, study_uid=STUDY, **kw)  # type: ignore[arg-type]
    path = folder / name
    synth.write(ds, path)
    return path


def test_echo(listener: Listener) -> None:
    done = dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "CHEXDCM", "127.0.0.1", str(listener.port))
    assert done.returncode == 0, done.stderr


def test_every_class_stored_durably_with_a_row_before_success(listener: Listener, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = [
        _image(src, "cr.dcm", 1, modality="CR"),
        _image(src, "dx.dcm", 2, modality="DX"),
        _image(src, "dxp.dcm", 3, modality="DX", presentation_intent="FOR PROCESSING", sop_class_uid=DX_PROC),
        _image(src, "sc.dcm", 4, modality="SC"),
    ]
    done = storescu(listener.port, *files)
    assert done.returncode == 0, done.stderr
    rows = listener.ledger.instances()
    assert sorted(r.sop_class_uid for r in rows) == sorted(str(dcmread(f).SOPClassUID) for f in files)
    assert len(listener.stored()) == 4 and not listener.parts()
    for row in rows:  # the stored bytes are the data set the peer sent, under a random name
        path = listener.spool.absolute(row.path)
        assert row.sop_uid not in str(path) and row.study_uid not in str(path)
        assert dcmread(path).SOPInstanceUID == row.sop_uid
    assert {r.study_uid for r in rows} == {STUDY}
    study = listener.ledger.study(STUDY)
    assert study is not None and study["state"] == "receiving"


@pytest.mark.parametrize(
    "syntax",
    [ts for ts in synth.ENCODABLE_TRANSFER_SYNTAXES if ts != "1.2.840.10008.1.2.1.99"],
)
def test_every_transfer_syntax_the_ingest_decodes(listener: Listener, tmp_path: Path, syntax: str) -> None:
    kw: dict[str, object] = {"bits_stored": 8} if syntax == "1.2.840.10008.1.2.4.50" else {}
    ds = synth.make_dataset(synth.chest_phantom((96, 80), seed=5), seed=5, study_uid=STUDY, **kw)  # type: ignore[arg-type]
    path = tmp_path / "x.dcm"
    synth.write(synth.encode(ds, syntax), path)
    done = dcmsend(listener.port, path, extra=("--decompress-never",))
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = listener.ledger.instances()
    stored = dcmread(listener.spool.absolute(row.path))
    sent = dcmread(path)
    if sent.file_meta.TransferSyntaxUID.is_compressed:  # sent as it is: the same bytes
        assert stored.file_meta.TransferSyntaxUID == syntax
        assert stored.PixelData == sent.PixelData
    else:  # dcmsend may pick another uncompressed syntax: the same values
        assert (stored.pixel_array == sent.pixel_array).all()


def test_deflate_is_not_accepted(listener: Listener, tmp_path: Path) -> None:
    ds = synth.make_dataset(synth.chest_phantom((96, 80), seed=6), seed=6, study_uid=STUDY)
    path = tmp_path / "deflated.dcm"
    synth.write(synth.encode(ds, "1.2.840.10008.1.2.1.99"), path)
    done = dcmsend(listener.port, path, extra=("--decompress-never",))
    assert "no acceptable presentation contexts" in (done.stdout + done.stderr).lower()
    assert listener.ledger.instances() == [] and not listener.stored()


def test_same_bytes_again_is_acknowledged_once_other_bytes_both_kept(
    listener: Listener, tmp_path: Path
) -> None:
    a = _image(tmp_path, "a.dcm", 7, sop_uid="1.2.826.0.1.3680043.8.498.77.1")
    assert storescu(listener.port, a).returncode == 0
    assert storescu(listener.port, a).returncode == 0
    assert len(listener.ledger.instances()) == 1 and len(listener.stored()) == 1
    assert listener.ledger.counters().get("duplicates") == 1
    changed = _image(tmp_path, "b.dcm", 8, sop_uid="1.2.826.0.1.3680043.8.498.77.1")
    assert storescu(listener.port, changed).returncode == 0
    rows = listener.ledger.instances()
    assert len(rows) == 2 and len(listener.stored()) == 2
    assert sorted(r.state for r in rows) == ["stored", "superseded"]
    latest = next(r for r in rows if r.state == "stored")
    assert dcmread(listener.spool.absolute(latest.path)).PixelData == dcmread(changed).PixelData


def test_calling_ae_not_allowed_is_rejected(listener: Listener, tmp_path: Path) -> None:
    a = _image(tmp_path, "a.dcm", 9)
    done = storescu(listener.port, a, aet="INTRUDER")
    assert done.returncode != 0
    assert "Rejected" in done.stdout + done.stderr or "reject" in (done.stdout + done.stderr).lower()
    assert listener.ledger.instances() == []
    assert storescu(listener.port, a).returncode == 0  # a good peer is still served


def test_wrong_called_ae_is_rejected(listener: Listener, tmp_path: Path) -> None:
    a = _image(tmp_path, "a.dcm", 10)
    assert storescu(listener.port, a, called="SOMEONE").returncode != 0
    assert listener.ledger.instances() == []


def test_sop_uid_like_a_path_writes_nothing_outside_the_spool(listener: Listener, tmp_path: Path) -> None:
    evil = _image(tmp_path / "src", "evil.dcm", 11, sop_uid="../../x")
    done = storescu(listener.port, evil)
    outside = [p for p in tmp_path.rglob("*") if "spool" not in p.parts and p.name not in ("evil.dcm", "src")]
    assert outside == []
    assert listener.ledger.instances() == [] and not listener.stored() and not listener.parts()
    assert "0xa900" in (done.stdout + done.stderr).lower() or done.returncode != 0


def test_watermark_gives_a700_and_keeps_what_was_stored(tmp_path: Path) -> None:
    lis = start_listener(tmp_path, **{"spool.max_bytes": 25_000})
    try:
        first = _image(tmp_path, "a.dcm", 12)
        assert storescu(lis.port, first).returncode == 0
        second = _image(tmp_path, "b.dcm", 13)
        done = storescu(lis.port, second, extra=("-v",))
        assert "refused: outofresources" in (done.stdout + done.stderr).lower()  # 0xA7xx
        assert len(lis.ledger.instances()) == 1 and len(lis.stored()) == 1 and not lis.parts()
    finally:
        lis.running.stop(grace=2)
        lis.ledger.close()


def test_injected_enospc_gives_a700_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHEXDCM_FAULT", "receive.enospc:1")
    lis = start_listener(tmp_path)
    try:
        first = _image(tmp_path, "a.dcm", 14)
        done = storescu(lis.port, first, extra=("-v",))
        assert "refused: outofresources" in (done.stdout + done.stderr).lower()  # 0xA7xx
        assert lis.ledger.instances() == [] and not lis.stored() and not lis.parts()
        assert storescu(lis.port, _image(tmp_path, "b.dcm", 15)).returncode == 0  # the next write succeeds
        assert len(lis.stored()) == 1
    finally:
        lis.running.stop(grace=2)
        lis.ledger.close()


def test_own_outputs_and_out_of_scope_never_open_a_study(listener: Listener, tmp_path: Path) -> None:
    lateral = _image(tmp_path, "lat.dcm", 16, view_position="LL", patient_orientation=("A", "F"))
    own = _image(tmp_path, "own.dcm", 17, extra={"Manufacturer": MANUFACTURER})
    assert storescu(listener.port, lateral, own).returncode == 0
    kinds = sorted(r.kind for r in listener.ledger.instances())
    assert kinds == ["out_of_scope", "own_output"]
    study = listener.ledger.study(STUDY)
    assert study is not None and study["state"] == "ignored" and study["pending"] == 0
    assert listener.ledger.promote_ready(1e12, 0.0, 0.0, set()) == []
