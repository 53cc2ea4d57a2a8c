"""Faults: the node killed at named points and by a timed ``kill -9``; destination down; model failure.

The destination is a dcmtk ``storescp +uf`` that writes every C-STORE it receives to a
file of its own, so deliveries are counted at the transport: after the restart every
result must be there exactly once.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread

from chexnet_dicom.testing import synth
from tests.helpers.node import (
    NodeProcess,
    all_sent,
    config_port,
    ledger_of,
    received,
    storescu,
    wait_for,
    write_node_config,
)
from tests.helpers.peers import storescp
from tests.helpers.stow import stow_peer

pytestmark = pytest.mark.network

STUDY = "1.2.826.0.1.3680043.8.498.93"


def images(folder: Path, n: int, study: str = STUDY, seed0: int = 50) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        ds = synth.make_dataset(
            synth.chest_phantom((160, 144), seed=seed0 + k),
            seed=seed0 + k,
            study_uid=study,
            instance_number=k + 1,
            patient_id="FAULT-TEST",
        )
        path = folder / f"i{k}.dcm"
        synth.write(ds, path)
        out.append(path)
    return out


_slow = pytest.mark.slow
#: About 20 s each (two node starts); two run by default, all with -m slow.
KILL_POINTS = [
    pytest.param("receive.streaming", marks=_slow),
    "receive.after_rename",
    pytest.param("receive.before_ack", marks=_slow),
    "worker.predict",
    pytest.param("worker.after_write", marks=_slow),
    pytest.param("send.connected", marks=_slow),
]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_at_a_named_point_every_result_arrives_exactly_once(tmp_path: Path, point: str) -> None:
    files = images(tmp_path / "src", 3)
    with storescp(tmp_path) as dest:
        # a quiet period long enough for the modality's resend to join the same study
        cfg = write_node_config(tmp_path, dest=dest.address, listen={"quiet_period": 4.0})
        port = config_port(cfg)
        spool = tmp_path / "spool"
        node = NodeProcess(cfg, port, fault=f"{point}:2" if point.startswith("receive") else point)
        first = storescu(port, *files)
        assert node.wait_dead(180) != 0, "the fault point did not kill the node"
        if point.startswith("receive"):
            assert first.returncode != 0  # the peer saw its association break
        node = NodeProcess(cfg, port)
        try:
            assert not list(spool.rglob("*.part")), "restart recovery leaves no .part file"
            if first.returncode != 0:  # a modality sends again what was not acknowledged
                assert storescu(port, *files).returncode == 0
            wait_for(lambda: all_sent(spool), timeout=180, what="every delivery sent")
            time.sleep(1.0)  # anything sent twice would arrive now
            counts = received(dest)
            assert len(counts) == len(files) + 1, counts  # the SR and one overlay per image
            assert set(counts.values()) == {1}, counts
            led = ledger_of(spool)
            try:
                stored = [i for i in led.instances() if i.kind == "image"]
                assert sorted(str(dcmread(f).SOPInstanceUID) for f in files) == sorted(
                    i.sop_uid for i in stored
                )
                study = led.study(STUDY)
                assert study is not None and study["version"] == 1  # analysed once: no second version
                assert len(led.deliveries()) == 1
            finally:
                led.close()
        finally:
            assert node.terminate() == 0


def test_a_timed_kill_9_while_receiving(tmp_path: Path) -> None:
    """``kill -9`` at an arbitrary moment of a 12-image association; after restart, exactly once."""
    import subprocess

    files = images(tmp_path / "src", 12, seed0=80)
    with storescp(tmp_path) as dest:
        cfg = write_node_config(tmp_path, dest=dest.address, listen={"quiet_period": 4.0})
        port = config_port(cfg)
        spool = tmp_path / "spool"
        node = NodeProcess(cfg, port)
        sender = subprocess.Popen(
            ["storescu", "-aet", "STORESCU", "-aec", "CHEXDCM", "127.0.0.1", str(port), *map(str, files)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        )
        time.sleep(0.15)
        node.kill()
        sender.wait(30)
        node = NodeProcess(cfg, port)
        try:
            assert not list(spool.rglob("*.part"))
            led = ledger_of(spool)
            acknowledged = {i.sop_uid for i in led.instances()}
            led.close()
            assert storescu(port, *files).returncode == 0  # the modality sends the study again
            wait_for(lambda: all_sent(spool), timeout=180, what="every delivery sent")
            time.sleep(1.0)
            counts = received(dest)
            assert len(counts) == len(files) + 1 and set(counts.values()) == {1}, counts
            led = ledger_of(spool)
            try:
                kept = {i.sop_uid for i in led.instances() if i.state == "stored"}
                assert acknowledged <= kept  # nothing acknowledged before the kill was lost
            finally:
                led.close()
        finally:
            assert node.terminate() == 0


@pytest.mark.slow
def test_killed_after_the_destination_stored_a_file_before_the_ledger_knew(tmp_path: Path) -> None:
    """The one window C-STORE cannot close: the destination has the file, the ledger does not.

    The kill comes after the first of two C-STORE responses, before the ledger records
    it.  The restart sends that one file again (at least once), flagged ``uncertain`` in
    the ledger, and the other, never sent, once; the repeat is byte-identical with the
    same SOP Instance UID (deterministic UIDs), so a PACS stores it once.  The storescp
    destination counts both transfers.
    """
    files = images(tmp_path / "src", 1, seed0=90)
    with storescp(tmp_path) as dest:
        cfg = write_node_config(tmp_path, dest=dest.address)
        port = config_port(cfg)
        spool = tmp_path / "spool"
        node = NodeProcess(cfg, port, fault="send.after_store")
        assert storescu(port, *files).returncode == 0
        assert node.wait_dead(180) != 0
        assert len(dest.files()) == 1  # killed between the two files of the association
        node = NodeProcess(cfg, port)
        try:
            wait_for(lambda: all_sent(spool), timeout=180, what="the delivery")
            time.sleep(1.0)
            counts = received(dest)
            assert len(counts) == 2 and sorted(counts.values()) == [1, 2], counts
            by_uid: dict[str, list[object]] = collections.defaultdict(list)
            for p in dest.files():
                ds = dcmread(p)
                by_uid[str(ds.SOPInstanceUID)].append(ds)
            assert all(all(x == v[0] for x in v) for v in by_uid.values())  # the same content
            led = ledger_of(spool)
            try:
                (d,) = led.deliveries()
                assert d["uncertain"] == 1 and d["sends"] == 3
            finally:
                led.close()
        finally:
            assert node.terminate() == 0


#: Three images: a delivery of n = 4 result files (the SR and one overlay each), one association.
_N_IMAGES = 3
_N_RESULTS = _N_IMAGES + 1


@pytest.mark.parametrize(
    ("point", "k"),
    [
        ("send.after_record", 1),
        ("send.after_record", _N_RESULTS - 1),
        pytest.param("send.after_store", 1, marks=_slow),
        ("send.after_store", _N_RESULTS - 1),
    ],
)
def test_killed_after_the_kth_c_store_response_each_file_arrives_once(
    tmp_path: Path, point: str, k: int
) -> None:
    """``kill -9`` after the k-th of n C-STORE responses of one association (Deliver item 4).

    ``send.after_record``: the k-th response is recorded; nothing is sent twice.
    ``send.after_store``: the k-th response arrived, not yet recorded: that one file, and
    only it, is sent again (``uncertain``).  Counted at a ``storescp +uf`` that keeps
    every copy.
    """
    with storescp(tmp_path) as dest:
        _killed_after_the_kth_response(tmp_path, point, k, dest.address, lambda: received(dest))


@pytest.mark.parametrize(
    ("point", "k"),
    [
        pytest.param("send.after_record", 1, marks=_slow),
        pytest.param("send.after_record", _N_RESULTS - 1, marks=_slow),
        pytest.param("send.after_store", 1, marks=_slow),
        ("send.after_store", _N_RESULTS - 1),
    ],
)
def test_killed_after_the_kth_stow_rs_response_each_file_arrives_once(
    tmp_path: Path, point: str, k: int
) -> None:
    """The same for STOW-RS: the node makes one request per result file, so the k-th of n
    responses is the k-th file's, recorded from its per-instance result (the Referenced
    SOP Sequence) before the next request; "in flight" is the one file of the one
    request whose response was not recorded.  Counted at a STOW-RS server that keeps
    every copy (Orthanc keeps one)."""
    with stow_peer(tmp_path) as dest:
        _killed_after_the_kth_response(tmp_path, point, k, dest.url, dest.received)
        assert set(dest.requests) == {1}, dest.requests  # one instance per request


def _killed_after_the_kth_response(
    tmp_path: Path, point: str, k: int, url: str, counted: Callable[[], collections.Counter[str]]
) -> None:
    files = images(tmp_path / "src", _N_IMAGES, seed0=60)
    cfg = write_node_config(tmp_path, dest=url)
    port = config_port(cfg)
    spool = tmp_path / "spool"
    node = NodeProcess(cfg, port, fault=f"{point}:{k}")
    assert storescu(port, *files).returncode == 0
    assert node.wait_dead(180) != 0, "the fault point did not kill the node"
    time.sleep(0.5)
    before = counted()
    assert sum(before.values()) == k, before  # killed mid-delivery, after k responses
    led = ledger_of(spool)
    try:
        (d,) = led.deliveries()
        states = dict(collections.Counter(f["state"] for f in led.delivery_files(d["id"])))
    finally:
        led.close()
    assert d["files"] == _N_RESULTS
    if point == "send.after_record":
        want = {"sent": k, "pending": _N_RESULTS - k}
    else:
        want = {"sent": k - 1, "inflight": 1, "pending": _N_RESULTS - k}
    assert states == {s: n for s, n in want.items() if n}, states
    node = NodeProcess(cfg, port)
    try:
        wait_for(lambda: all_sent(spool), timeout=180, what="the delivery")
        time.sleep(1.0)  # anything sent twice would arrive now
        counts = counted()
        assert len(counts) == _N_RESULTS, counts
        twice = [uid for uid, n in counts.items() if n > 1]
        assert set(counts.values()) <= {1, 2}, counts
        led = ledger_of(spool)
        try:
            (d,) = led.deliveries()
            files_rows = led.delivery_files(d["id"])
        finally:
            led.close()
        uncertain = sum(f["uncertain"] for f in files_rows)
        if point == "send.after_record":
            assert twice == [], counts
            assert uncertain == 0 and d["sends"] == _N_RESULTS
        else:
            assert len(twice) == 1, counts  # at most the one in flight
            assert uncertain == 1 and d["sends"] == _N_RESULTS + 1
        assert {f["state"] for f in files_rows} == {"sent"}
    finally:
        assert node.terminate() == 0


def test_the_node_logs_no_patient_data(tmp_path: Path) -> None:
    """``chexdcm -vv listen``: receive, analyse, deliver and a refused peer, and no identifier in the log."""
    study = "1.2.826.0.1.3680043.8.498.97"
    folder = tmp_path / "src"
    folder.mkdir()
    ds = synth.make_dataset(
        synth.chest_phantom((160, 144), seed=7),
        seed=7,
        study_uid=study,
        patient_name="Secretname^Privatefirst",
        patient_id="PID-93417",
        extra={"AccessionNumber": "ACC-55123"},
    )
    path = folder / "a.dcm"
    synth.write(ds, path)
    with storescp(tmp_path) as dest:
        cfg = write_node_config(tmp_path, dest=dest.address)
        node = NodeProcess(cfg, config_port(cfg), verbose=2)
        try:
            assert storescu(config_port(cfg), path).returncode == 0
            assert storescu(config_port(cfg), path, aet="INTRUDER").returncode != 0
            wait_for(lambda: all_sent(tmp_path / "spool"), timeout=180, what="the delivery")
        finally:
            assert node.terminate() == 0
        log = node.output()
        assert "association" in log.lower() or "delivery" in log.lower()  # the log does say things
        for secret in (
            study,
            str(ds.SOPInstanceUID),
            str(ds.SeriesInstanceUID),
            "Secretname",
            "PID-93417",
            "ACC-55123",
        ):
            assert secret not in log, f"{secret[:8]}... appears in the node's log"
