"""The worker parses the header bytes the listener kept, never the file's header again (issue 19)."""

from __future__ import annotations

from pathlib import Path

from chexnet_dicom.config import IngestConfig, SpoolConfig
from chexnet_dicom.dicom.read import read_header
from chexnet_dicom.node.ledger import NodeLedger, StoredInstance
from chexnet_dicom.node.receiver import kept_header
from chexnet_dicom.node.spool import Spool
from chexnet_dicom.node.worker import scan_stored
from chexnet_dicom.testing import synth

STUDY = "1.2.826.0.1.3680043.8.498.181"


def _write(path: Path, seed: int, name: str) -> Path:
    ds = synth.make_dataset(
        synth.chest_phantom((96, 80), seed=seed), seed=seed, study_uid=STUDY, patient_name=name
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    synth.write(ds, path)
    return path


def test_the_worker_scans_the_kept_bytes_not_the_file(tmp_path: Path) -> None:
    spool = Spool(SpoolConfig(dir=str(tmp_path / "spool")))
    path = _write(spool.store / "a.dcm", 1, "Kept^Header")
    header = kept_header(read_header(path, skip_above=1 << 20))
    assert header is not None and header.data == path.read_bytes()[: header.offset]
    inst = StoredInstance(
        "f1",
        spool.relative(path),
        "",
        STUDY,
        "",
        "",
        "image",
        None,
        "stored",
        0.0,
        path.stat().st_size,
        header,
    )
    # the file's header changes after the listener read it: the worker still sees the kept one
    _write(path, 1, "Other^Name")
    found = scan_stored([inst], spool, IngestConfig())
    (study,) = found.studies
    (image,) = study.selected
    assert str(image.dataset.PatientName) == "Kept^Header"
    assert image.scanned.raw == header.data  # carried into the records as they were received
    # without kept bytes, the file is read
    bare = StoredInstance("f1", spool.relative(path), "", STUDY, "", "", "image", None, "stored", 0.0)
    (again,) = scan_stored([bare], spool, IngestConfig()).studies[0].selected
    assert str(again.dataset.PatientName) == "Other^Name"


def test_the_ledger_gives_the_kept_header_with_the_claim(tmp_path: Path) -> None:
    from chexnet_dicom.node.ledger import NewInstance

    path = _write(tmp_path / "b.dcm", 2, "Claimed^Header")
    header = kept_header(read_header(path))
    ledger = NodeLedger(tmp_path / "ledger.sqlite")
    try:
        new = NewInstance(
            "f2",
            "b.dcm",
            "1.2.3.4",
            STUDY,
            "1.2.3",
            "1.2.840.10008.5.1.4.1.1.1",
            "0" * 64,
            path.stat().st_size,
            "image",
            None,
            "X",
            header=header,
        )
        ledger.record_instance(new, now=1.0)
        ledger.promote_ready(100.0, 0.0, 0.0, set())
        (claimed,) = ledger.claim("w")
        (inst,) = claimed.instances
        assert inst.header == header and inst.size == path.stat().st_size
        ledger.purged(["f2"], [])
        assert ledger.instances()[0].header is None
    finally:
        ledger.close()
