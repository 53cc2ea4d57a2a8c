"""The whole node with real peers: dcmtk sends a study, the results arrive (outbox, Orthanc by C-STORE and STOW-RS)."""

from __future__ import annotations

import gc
import io
import sys
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from chexnet_dicom.net.destination import parse_destination
from chexnet_dicom.node.service import SWITCH_INTERVAL_S, Node
from chexnet_dicom.results import study_ref
from tests.helpers.node import analysed, node_config, storescu, wait_for, write_images
from tests.helpers.peers import orthanc
from tests.helpers.studies import is_expected_outputs, overlay_file

pytestmark = pytest.mark.network

STUDY = "1.2.826.0.1.3680043.8.498.91"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR


@pytest.fixture
def started() -> Iterator[list[Node]]:
    nodes: list[Node] = []
    yield nodes
    for n in nodes:
        n.stop(grace=2)


def start_node(
    started: list[Node], tmp_path: Path, destination: Any = None, **overrides: Any
) -> tuple[Node, int]:
    node = Node(node_config(tmp_path, **overrides), destination)
    started.append(node)
    port = node.start()
    return node, port


class _Cyclic:
    def __init__(self) -> None:
        self.me = self


def test_a_started_node_is_frozen_out_of_full_collections_and_thawed_at_stop(
    started: list[Node], tmp_path: Path
) -> None:
    """A full collection in the listener's process holds the interpreter lock: after the start it walks only what came after."""
    node, _ = start_node(started, tmp_path)
    assert node.ledger is not None
    assert gc.get_freeze_count() > 0
    assert not any(o is node.ledger for o in gc.get_objects()), "the node's state should be frozen"
    garbage = _Cyclic()
    dead = weakref.ref(garbage)
    del garbage
    gc.collect()
    assert dead() is None, "cyclic garbage made after the start is still collected"
    node.stop(grace=2)
    started.remove(node)
    assert gc.get_freeze_count() == 0
    assert any(o is node.ledger for o in gc.get_objects()), "stop gives the objects back to the collector"


def test_outbox_then_a_late_image_supersedes_the_sr(started: list[Node], tmp_path: Path) -> None:
    node, port = start_node(started, tmp_path)
    first = write_images(tmp_path / "src", [21, 22])
    assert storescu(port, *first).returncode == 0
    assert node.ledger is not None
    row = wait_for(lambda: analysed(node.ledger, STUDY), what="the study's analysis")
    assert row["state"] == "analysed", row
    v1 = node.spool.outbox / study_ref(STUDY) / "1"
    sr1 = dcmread(v1 / "sr.dcm")
    assert sr1.SOPClassUID == SR_CLASS and sr1.StudyInstanceUID == STUDY
    assert is_expected_outputs([p.name for p in v1.glob("sc-*.dcm")], ["sc-1-*.dcm", "sc-2-*.dcm"])
    # the late image re-opens the study: version 2 covers all three images and supersedes v1
    late = write_images(tmp_path / "late", [23], first=3)
    assert storescu(port, *late).returncode == 0
    wait_for(lambda: analysed(node.ledger, STUDY, 2), what="the second version")
    v2 = node.spool.outbox / study_ref(STUDY) / "2"
    sr2 = dcmread(v2 / "sr.dcm")
    assert sr2.SOPInstanceUID != sr1.SOPInstanceUID
    pred = sr2.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pred.ReferencedSOPInstanceUID == sr1.SOPInstanceUID
    covered = {
        ref.ReferencedSOPInstanceUID
        for item in sr2.CurrentRequestedProcedureEvidenceSequence
        for series in item.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    sent = {str(dcmread(p).SOPInstanceUID) for p in first + late}
    assert sent <= covered
    assert is_expected_outputs([p.name for p in v2.glob("sc-*.dcm")], ["sc-3-*.dcm"])  # only the new image's
    assert dcmread(overlay_file(v2, 3)).InstanceNumber // 100 == 3  # 100 x image number + finding number
    # sending the same instance again changes nothing
    assert storescu(port, late[0]).returncode == 0
    study = node.ledger.study(STUDY)
    assert study is not None and study["version"] == 2


def test_end_to_end_into_orthanc_by_c_store(started: list[Node], tmp_path: Path) -> None:
    with orthanc(tmp_path) as pacs:
        dest = parse_destination(pacs.address, calling_ae="CHEXDCM")
        node, port = start_node(started, tmp_path, dest)
        images = write_images(tmp_path / "src", [31, 32, 33])
        assert storescu(port, *images).returncode == 0
        assert node.ledger is not None
        wait_for(lambda: node.ledger.deliveries("sent"), what="the delivery")
        studies = pacs.rest("/studies?expand")
        (study,) = [s for s in studies if s["MainDicomTags"]["StudyInstanceUID"] == STUDY]
        instances = pacs.rest(f"/studies/{study['ID']}/instances?expand")
        classes = sorted(i["MainDicomTags"].get("SOPClassUID", "") for i in instances)
        files = {
            i["ID"]: dcmread(io.BytesIO(pacs.rest_bytes(f"/instances/{i['ID']}/file"))) for i in instances
        }
        srs = [ds for ds in files.values() if ds.SOPClassUID == SR_CLASS]
        assert len(srs) == 1 and srs[0].StudyInstanceUID == STUDY
        scs = [ds for ds in files.values() if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"]
        assert len(scs) == 3 and all(ds.StudyInstanceUID == STUDY for ds in scs)
        assert len(classes) == 4  # results only: the node never forwards the images themselves


def test_end_to_end_into_orthanc_by_stow_rs(started: list[Node], tmp_path: Path) -> None:
    with orthanc(tmp_path) as pacs:
        dest = parse_destination(pacs.dicomweb_url)
        node, port = start_node(started, tmp_path, dest)
        assert sys.getswitchinterval() <= SWITCH_INTERVAL_S  # the listener's threads answer promptly
        images = write_images(tmp_path / "src", [41])
        assert storescu(port, *images).returncode == 0
        assert node.ledger is not None
        wait_for(lambda: node.ledger.deliveries("sent"), what="the STOW-RS delivery")
        instances = pacs.instances()
        classes = sorted(i["MainDicomTags"].get("SOPClassUID", "") for i in instances)
        assert SR_CLASS in classes or len(instances) == 2
        assert len(instances) == 2  # SR + one overlay


def test_destination_down_then_up_the_results_arrive_once(started: list[Node], tmp_path: Path) -> None:
    from tests.helpers.node import received
    from tests.helpers.peers import free_port, storescp

    port_dest = free_port()
    dest = parse_destination(f"STORESCP@127.0.0.1:{port_dest}")
    node, port = start_node(
        started, tmp_path, dest, **{"destination.backoff_s": 0.3, "destination.backoff_cap_s": 1.0}
    )
    assert node.ledger is not None
    assert storescu(port, *write_images(tmp_path / "src", [61, 62])).returncode == 0
    failed_once = wait_for(
        lambda: [d for d in node.ledger.deliveries() if d["attempts"] >= 2], what="two failed attempts"
    )
    assert failed_once[0]["state"] in ("pending", "sending") and failed_once[0]["last_error"]
    with storescp(tmp_path, port=port_dest) as pacs:
        wait_for(lambda: node.ledger.deliveries("sent"), what="the delivery once the destination is up")
        counts = received(pacs)
        assert len(counts) == 3 and set(counts.values()) == {1}


def test_dead_letter_after_the_last_attempt_then_resend(started: list[Node], tmp_path: Path) -> None:
    from tests.helpers.peers import free_port, storescp

    port_dest = free_port()
    dest = parse_destination(f"STORESCP@127.0.0.1:{port_dest}")
    node, port = start_node(
        started,
        tmp_path,
        dest,
        **{"destination.attempts": 2, "destination.backoff_s": 0.2, "destination.backoff_cap_s": 0.2},
    )
    assert node.ledger is not None
    assert storescu(port, *write_images(tmp_path / "src", [63])).returncode == 0
    (dead,) = wait_for(lambda: node.ledger.deliveries("dead"), what="a dead letter")
    assert dead["attempts"] == 2
    time.sleep(1.0)
    assert node.ledger.deliveries("dead")[0]["attempts"] == 2  # bounded: no attempt after the last
    with storescp(tmp_path, port=port_dest) as pacs:
        assert node.ledger.resend() == 1
        wait_for(lambda: node.ledger.deliveries("sent"), what="the re-sent dead letter")
        assert len(pacs.files()) == 2


def test_a_model_failure_on_one_study_does_not_stop_the_others(
    started: list[Node], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHEXDCM_FAULT", "worker.model_error:1")  # the worker's first study fails
    node, port = start_node(started, tmp_path)
    assert node.ledger is not None
    bad, good = "1.2.826.0.1.3680043.8.498.94", "1.2.826.0.1.3680043.8.498.95"
    assert storescu(port, *write_images(tmp_path / "a", [71], study=bad)).returncode == 0
    failed = wait_for(lambda: analysed(node.ledger, bad), what="the first study")
    assert failed["state"] == "failed" and failed["failure"] and failed["failure_message"]
    assert storescu(port, *write_images(tmp_path / "b", [72], study=good)).returncode == 0
    ok = wait_for(lambda: analysed(node.ledger, good), what="the second study")
    assert ok["state"] == "analysed"
    assert (node.spool.outbox / study_ref(good) / "1" / "sr.dcm").is_file()


def test_retention_purges_images_and_a_later_version_still_covers_them(
    started: list[Node], tmp_path: Path
) -> None:
    node, port = start_node(started, tmp_path, **{"spool.retention_s": 0.0})
    assert node.ledger is not None
    first = write_images(tmp_path / "src", [101])
    assert storescu(port, *first).returncode == 0
    wait_for(lambda: analysed(node.ledger, STUDY), what="the analysis")
    # the files go first, then the ledger says so (a crash between is redone by the next purge)
    wait_for(lambda: [i.state for i in node.ledger.instances()] == ["purged"], what="the purge", timeout=30)
    assert not list(node.spool.store.rglob("*.dcm"))
    late = write_images(tmp_path / "late", [102], first=2)
    assert storescu(port, *late).returncode == 0
    wait_for(lambda: analysed(node.ledger, STUDY, 2), what="the second version")
    sr2 = dcmread(node.spool.outbox / study_ref(STUDY) / "2" / "sr.dcm")
    covered = {
        ref.ReferencedSOPInstanceUID
        for item in sr2.CurrentRequestedProcedureEvidenceSequence
        for series in item.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert {str(dcmread(p).SOPInstanceUID) for p in first + late} <= covered
