"""``chexdcm batch --send``: each study's SR and SC reach a real dcmtk storescp exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from pydicom import dcmread

from chexnet_dicom.errors import EXIT_FAILURE, EXIT_INCOMPLETE
from chexnet_dicom.testing.export import Export
from tests.helpers.batch import read_table, run_batch_cli
from tests.helpers.peers import free_port, storescp


def _sops(paths: list[Path]) -> list[str]:
    return [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]


def test_each_study_s_results_arrive_exactly_once(export: Export, card: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with storescp(tmp_path) as scp:
        assert (
            run_batch_cli(export.root, out, card, "--write-dicom", "--send", scp.address) == EXIT_INCOMPLETE
        )
        received = scp.files()
        # a resume sends nothing again: every study was delivered
        assert (
            run_batch_cli(export.root, out, card, "--write-dicom", "--send", scp.address) == EXIT_INCOMPLETE
        )
        assert len(scp.files()) == len(received)
    written = sorted((out / "dicom").rglob("*.dcm"))
    assert Counter(_sops(received)) == Counter(_sops(written))  # each written object once
    classes = Counter(dcmread(p, stop_before_pixels=True).SOPClassUID.name for p in received)
    assert classes["Comprehensive 3D SR Storage"] == len(export.studies)
    assert classes["Secondary Capture Image Storage"] == len(read_table(out, "predictions"))
    assert not [r for r in read_table(out, "errors") if r["stage"] == "send"]


def test_a_destination_down_stops_the_run_and_a_resume_delivers(
    export: Export, card: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    port = free_port()
    down = f"STORESCP@127.0.0.1:{port}"
    assert run_batch_cli(export.root, out, card, "--send", down, "--send-attempts", "1") == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "127.0.0.1" in err and "error" in err
    with storescp(tmp_path, port=port) as scp:
        assert run_batch_cli(export.root, out, card, "--send", down) == EXIT_INCOMPLETE
        received = scp.files()
    written = sorted((out / "dicom").rglob("*.dcm"))
    assert Counter(_sops(received)) == Counter(_sops(written))


def test_the_destination_table_of_the_config_sends_by_stow_rs(
    export: Export, card: Path, tmp_path: Path
) -> None:
    from tests.helpers.peers import orthanc

    out = tmp_path / "run"
    with orthanc(tmp_path) as pacs:
        cfg = tmp_path / "batch.toml"
        cfg.write_text(
            f'[runtime]\nworkers = 1\n\n[destination]\nurl = "{pacs.dicomweb_url}"\nattempts = 2\n'
        )
        assert run_batch_cli(export.root, out, card, "--config", str(cfg)) == EXIT_INCOMPLETE
        stored = {i["MainDicomTags"]["SOPInstanceUID"] for i in pacs.instances()}
    written = sorted((out / "dicom").rglob("*.dcm"))  # the table implies --write-dicom, as --send does
    assert written and stored == set(_sops(written))
