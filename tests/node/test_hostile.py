"""Hostile peers against the guarded listener: each is cut off with memory bounded, and a good peer is served after.

The listener runs in this process, so its memory is this process's: each test checks
that the resident set grew by less than :data:`MAX_GROWTH` while the peer did its worst.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE

from tests.helpers.node import Listener, dcmtk, start_listener

pytestmark = pytest.mark.network

MiB = 1024 * 1024
MAX_GROWTH = 48 * MiB
CR = "1.2.840.10008.5.1.4.1.1.1"


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Listener]:
    lis = start_listener(
        tmp_path,
        **{
            "listen.acse_timeout": 2.0,
            "listen.socket_timeout": 2.0,
            "listen.dimse_timeout": 2.0,
            "listen.max_connections": 16,
            "listen.max_associations": 8,
            "access.max_instance_bytes": 2 * MiB,
            "access.max_association_bytes": 8 * MiB,
        },
    )
    try:
        yield lis
    finally:
        lis.running.stop(grace=2)
        lis.ledger.close()


def good_peer_served(lis: Listener) -> None:
    done = dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "CHEXDCM", "127.0.0.1", str(lis.port))
    assert done.returncode == 0, done.stderr
    assert not lis.parts(), "no temporary file is left behind"


def closed_within(sock: socket.socket, seconds: float, feed: bytes = b"", drip: float = 0.0) -> float:
    """Seconds until the listener closes ``sock`` (feeding ``feed`` a byte every ``drip`` s)."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    k = 0
    while time.monotonic() - t0 < seconds:
        try:
            if k < len(feed) and drip:
                sock.sendall(feed[k : k + 1])
                k += 1
            data = sock.recv(65536)
            if data == b"":
                return time.monotonic() - t0
        except TimeoutError:
            continue
        except OSError:  # reset by the listener
            return time.monotonic() - t0
    raise AssertionError(f"the connection was still open after {seconds} s")


def drain_until_closed(sock: socket.socket, seconds: float) -> float:
    t0 = time.monotonic()
    sock.settimeout(0.5)
    while time.monotonic() - t0 < seconds:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - t0
    raise AssertionError(f"still open after {seconds} s")


def test_random_bytes(guarded: Listener) -> None:
    before = rss()
    with socket.create_connection(("127.0.0.1", guarded.port)) as s:
        with contextlib.suppress(OSError):  # cut off while sending
            s.sendall(os.urandom(256 * 1024))
        assert closed_within(s, 5) < 5
    assert rss() - before < MAX_GROWTH
    good_peer_served(guarded)


def test_an_http_request(guarded: Listener) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8\r\n\r\n")
        assert closed_within(s, 5) < 5
    good_peer_served(guarded)


def test_a_pdu_claiming_4_gib_with_a_slow_drip(guarded: Listener) -> None:
    before = rss()
    with socket.create_connection(("127.0.0.1", guarded.port)) as s:
        s.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFF0))  # an A-ASSOCIATE-RQ of 4 GiB
        assert closed_within(s, 5, feed=b"\x00" * 100, drip=0.1) < 5
    assert rss() - before < MAX_GROWTH
    good_peer_served(guarded)


def test_a_plausible_pdu_dripped_a_byte_at_a_time(guarded: Listener) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port)) as s:
        s.sendall(struct.pack(">BBL", 0x01, 0, 2000))
        took = closed_within(s, 10, feed=b"\x00" * 2000, drip=0.05)  # would take 100 s to finish
        assert took < 6  # the PDU deadline (socket_timeout 2 s) plus slack
    good_peer_served(guarded)


def _associate(port: int) -> tuple[object, socket.socket, int]:
    ae = AE("STORESCU")
    ae.add_requested_context(CR)
    assoc = ae.associate("127.0.0.1", port, ae_title="CHEXDCM")
    assert assoc.is_established
    ctx = assoc.accepted_contexts[0].context_id
    assert assoc.dul.socket is not None and assoc.dul.socket.socket is not None and ctx is not None
    return assoc, assoc.dul.socket.socket, ctx


def _pdata(ctx: int, header: int, payload: bytes) -> bytes:
    pdv = struct.pack(">LBB", len(payload) + 2, ctx, header) + payload
    return struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv


def _store_command() -> bytes:
    """A well-formed C-STORE-RQ command set (implicit VR little endian)."""
    from pydicom.dataset import Dataset
    from pynetdicom.dsutils import encode

    ds = Dataset()
    ds.AffectedSOPClassUID = CR
    ds.CommandField = 0x0001
    ds.MessageID = 1
    ds.Priority = 0
    ds.CommandDataSetType = 0x0000
    ds.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.99.1"
    body = encode(ds, True, True)
    assert body is not None
    return struct.pack("<HHLL", 0x0000, 0x0000, 4, len(body)) + body


def test_a_command_pynetdicom_would_crash_on_is_cut_off(guarded: Listener) -> None:
    assoc, sock, ctx = _associate(guarded.port)
    sock.sendall(_pdata(ctx, 0x03, struct.pack("<HHLH", 0x0000, 0x0100, 2, 0x0001)))  # no CommandDataSetType
    wait = time.monotonic() + 5
    while guarded.ledger.counters().get("guard_trips", 0) < 1 and time.monotonic() < wait:
        time.sleep(0.05)
    assert guarded.ledger.counters().get("guard_trips", 0) == 1
    assoc.abort()  # type: ignore[attr-defined]
    good_peer_served(guarded)


def _flood(sock: socket.socket, pdus: Iterator[bytes], seconds: float) -> tuple[int, float, bool]:
    """Send ``pdus`` for up to ``seconds``: (bytes accepted by the kernel, seconds, cut off by the listener)."""
    sent = 0
    t0 = time.monotonic()
    sock.settimeout(seconds)
    try:
        for pdu in pdus:
            sock.sendall(pdu)
            sent += len(pdu)
            if time.monotonic() - t0 > seconds:
                return sent, time.monotonic() - t0, False
    except OSError:
        return sent, time.monotonic() - t0, True
    return sent, time.monotonic() - t0, False


def test_endless_p_data_command_never_ends(guarded: Listener) -> None:
    before = rss()
    assoc, sock, ctx = _associate(guarded.port)
    chunk = b"\x00" * 16000

    def forever() -> Iterator[bytes]:
        yield _pdata(ctx, 0x01, _store_command())
        while True:
            yield _pdata(ctx, 0x01, chunk)  # command fragments, never the last one

    sent, took, cut = _flood(sock, forever(), 10)
    # the kernel's loopback buffers take a few MB before the reset arrives; the listener kept 64 KiB
    assert cut and took < 5 and sent < 32 * MiB, (sent, took, cut)
    assert any("command-too-large" in msg for _, kind, msg in guarded.ledger.events(20) if kind == "guard")
    assoc.abort()  # type: ignore[attr-defined]
    assert rss() - before < MAX_GROWTH
    assert guarded.ledger.counters().get("guard_trips", 0) >= 1
    good_peer_served(guarded)


def test_a_dataset_that_never_ends(guarded: Listener) -> None:
    before = rss()
    assoc, sock, ctx = _associate(guarded.port)
    chunk = b"\x00" * 60000

    def forever() -> Iterator[bytes]:
        yield _pdata(ctx, 0x03, _store_command())  # the command, complete
        while True:
            yield _pdata(ctx, 0x00, chunk)  # data set fragments, never the last one

    sent, took, cut = _flood(sock, forever(), 15)
    assert cut and took < 8 and 2 * MiB < sent < 32 * MiB, (sent, took, cut)
    assoc.abort()  # type: ignore[attr-defined]
    time.sleep(0.5)
    assert rss() - before < MAX_GROWTH
    assert guarded.ledger.counters().get("guard_trips", 0) >= 1
    assert any("instance" in msg for _, kind, msg in guarded.ledger.events(20) if kind == "guard")
    assert guarded.ledger.instances() == []
    good_peer_served(guarded)


def test_50_idle_connections(guarded: Listener) -> None:
    before = rss()
    socks = [socket.create_connection(("127.0.0.1", guarded.port)) for _ in range(50)]
    try:
        t0 = time.monotonic()
        closed = [0.0] * len(socks)

        def watch(k: int) -> None:
            closed[k] = drain_until_closed(socks[k], 15)

        threads = [threading.Thread(target=watch, args=(k,)) for k in range(len(socks))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert max(closed) < 10, "every idle connection is closed (the ACSE timeout is 2 s)"
        assert sum(1 for c in closed if c < 1.0) >= 50 - 16, "connections over the limit are closed at once"
        assert time.monotonic() - t0 < 15
    finally:
        for s in socks:
            s.close()
    assert rss() - before < MAX_GROWTH
    good_peer_served(guarded)


def test_the_per_association_byte_budget(guarded: Listener, tmp_path: Path) -> None:
    """Instances each under the 2 MiB cap, but more than the association's 8 MiB in all."""
    import copy

    from pydicom.uid import generate_uid

    from chexnet_dicom.testing import synth
    from tests.helpers.node import storescu

    ds = synth.make_dataset(synth.chest_phantom((1024, 768), seed=4), bits_stored=16, seed=4)  # 1.5 MB
    files = []
    for k in range(8):
        c = copy.deepcopy(ds)
        c.SOPInstanceUID = generate_uid()
        files.append(tmp_path / f"b{k}.dcm")
        synth.write(c, files[-1])
    done = storescu(guarded.port, *files)
    assert done.returncode != 0
    stored = len(guarded.ledger.instances())
    assert 3 <= stored < len(files)
    assert any("association-budget" in msg for _, kind, msg in guarded.ledger.events(20) if kind == "guard")
    good_peer_served(guarded)
