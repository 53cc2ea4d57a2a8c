"""Hostile peers against the guarded listener: each is cut off with memory bounded, and a good peer is served after.

The listener runs in this process, so its memory is this process's: each test checks
that the resident set grew by less than :data:`MAX_GROWTH` while the peer did its worst.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
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
            "listen.first_pdu_timeout": 2.0,
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
        assert took < 6  # the first-PDU deadline (2 s) plus slack
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


# --------------------------------------------------------------------------- lockout (issue 18, item 2)

MODALITY_HOST = "127.0.0.2"  # the allowed modality's source address; the floods come from 127.0.0.1
SERVED_WITHIN = 2.0


def _ae_field(title: bytes) -> bytes:
    return title.ljust(16, b" ")[:16]


def associate_rq(
    calling: bytes = b"FLOODER", called: bytes = b"CHEXDCM", abstract: bytes = b"1.2.840.10008.1.1"
) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) proposing ``abstract`` in context 1 (implicit VR
    little endian), with these raw AE title fields."""

    def item(kind: int, value: bytes) -> bytes:
        return struct.pack(">BBH", kind, 0, len(value)) + value

    context = item(0x20, b"\x01\x00\x00\x00" + item(0x30, abstract) + item(0x40, b"1.2.840.10008.1.2"))
    user = item(0x50, item(0x51, struct.pack(">L", 16384)) + item(0x52, b"1.2.3.4"))
    body = (
        struct.pack(">HH", 1, 0)
        + (called if len(called) == 16 else _ae_field(called))
        + (calling if len(calling) == 16 else _ae_field(calling))
        + b"\x00" * 32
        + item(0x10, b"1.2.840.10008.3.1.1.1")
        + context
        + user
    )
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


@pytest.fixture
def exposed(tmp_path: Path) -> Iterator[Listener]:
    """The listener with its default limits and timeouts (ACSE 30 s), allowing MODALITY from 127.0.0.2 only."""
    lis = start_listener(tmp_path, **{"access.allow": ["ECHOSCU", f"MODALITY@{MODALITY_HOST}"]})
    try:
        yield lis
    finally:
        lis.running.stop(grace=2)
        lis.ledger.close()


@pytest.fixture(scope="module")
def small_instance() -> Dataset:
    from chexnet_dicom.testing import synth

    return synth.make_dataset(synth.chest_phantom((64, 64), seed=7), seed=7)


def modality_served(lis: Listener, ds: Dataset) -> tuple[float, float]:
    """C-ECHO, then C-STORE, each on its own association from 127.0.0.2: seconds each took."""
    import copy

    from pydicom.uid import generate_uid

    took = []
    for service in ("echo", "store"):
        ae = AE("MODALITY")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
        ae.add_requested_context("1.2.840.10008.1.1" if service == "echo" else str(ds.SOPClassUID))
        t0 = time.monotonic()
        assoc = ae.associate("127.0.0.1", lis.port, ae_title="CHEXDCM", bind_address=(MODALITY_HOST, 0))
        assert assoc.is_established, f"the modality's {service} association was not accepted"
        if service == "echo":
            status = assoc.send_c_echo()
        else:
            c = copy.deepcopy(ds)
            c.SOPInstanceUID = generate_uid()
            status = assoc.send_c_store(c)
        assoc.release()
        took.append(time.monotonic() - t0)
        assert status is not None and status.Status == 0x0000, f"{service}: {status}"
    assert max(took) < SERVED_WITHIN, took
    return took[0], took[1]


def _open(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        with contextlib.suppress(OSError):  # over the limits: closed, or refused by a full backlog
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
    return socks


def _close(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


@pytest.mark.parametrize("count", [8, 100])
def test_plain_connections_held_open_do_not_lock_out_a_modality(
    exposed: Listener, small_instance: Dataset, count: int
) -> None:
    socks = _open(exposed.port, count)
    try:
        echo, store = modality_served(exposed, small_instance)
        print(f"{count} idle sockets held: echo {echo:.3f} s, store {store:.3f} s")
    finally:
        _close(socks)


def test_a_port_scan_of_connect_and_close_does_not_lock_out_a_modality(
    exposed: Listener, small_instance: Dataset
) -> None:
    for _ in range(100):
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", exposed.port), timeout=2).close()
    echo, store = modality_served(exposed, small_instance)
    print(f"after 100 connect-and-close: echo {echo:.3f} s, store {store:.3f} s")


@pytest.mark.parametrize(
    "calling",
    [
        b"FLOOD\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        b"MODALIT\xc3\xa9".ljust(16),
        b"MODALITY\t".ljust(16),
    ],
    ids=["nul-padded", "non-ascii", "tab"],
)
def test_malformed_association_requests_are_rejected_at_once(
    exposed: Listener, small_instance: Dataset, calling: bytes
) -> None:
    socks = _open(exposed.port, 8)
    try:
        answers = []
        for s in socks:
            s.sendall(associate_rq(calling=calling))
        for s in socks:
            s.settimeout(2)
            answers.append(s.recv(10))
            assert drain_until_closed(s, 2) < 2
        # A-ASSOCIATE-RJ: rejected permanent, service user, calling AE title not recognised
        assert answers == [bytes([0x03, 0, 0, 0, 0, 4, 0, 1, 1, 3])] * 8
        echo, store = modality_served(exposed, small_instance)
        print(f"8 malformed A-ASSOCIATE-RQs: echo {echo:.3f} s, store {store:.3f} s")
    finally:
        _close(socks)
    assert exposed.ledger.counters().get("associations_refused", 0) == 0  # not even an association


def test_an_allowed_title_from_another_host_is_rejected_before_a_slot(exposed: Listener) -> None:
    with socket.create_connection(("127.0.0.1", exposed.port), timeout=2) as s:
        s.sendall(associate_rq(calling=b"MODALITY"))  # from 127.0.0.1, allowed only from 127.0.0.2
        assert s.recv(10) == bytes([0x03, 0, 0, 0, 0, 4, 0, 1, 1, 3])
    assert exposed.ledger.counters().get("associations_refused", 0) == 1


def test_slowloris_sockets_do_not_lock_out_a_modality(exposed: Listener, small_instance: Dataset) -> None:
    """8 sockets dripping an A-ASSOCIATE-RQ at about 1 byte/s: cut at the first-PDU deadline (5 s)."""
    socks = _open(exposed.port, 8)
    pdu = associate_rq(calling=b"ECHOSCU")
    stop = threading.Event()
    closed: dict[int, float] = {}
    t0 = time.monotonic()

    def drip(k: int, s: socket.socket) -> None:
        for byte in range(len(pdu)):
            if stop.is_set():
                return
            try:
                s.sendall(pdu[byte : byte + 1])
                s.settimeout(1.0)
                if s.recv(1) == b"":
                    closed[k] = time.monotonic() - t0
                    return
            except TimeoutError:
                continue
            except OSError:
                closed[k] = time.monotonic() - t0
                return

    threads = [threading.Thread(target=drip, args=(k, s), daemon=True) for k, s in enumerate(socks)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)  # every dripping socket is inside its first PDU
        served = [modality_served(exposed, small_instance) for _ in range(2)]
        print(f"8 slowloris sockets: served {served}")
        for t in threads:
            t.join(timeout=15)
        assert len(closed) == 8 and max(closed.values()) < 5.0 + 3.0, closed
    finally:
        stop.set()
        _close(socks)


# --------------------------------------------------------------------------- malformed commands (item 5)

A_ABORT = 0x07


def _raw_association(port: int, abstract: str = CR) -> socket.socket:
    """A raw socket with an association (context 1: ``abstract``, implicit VR LE) as STORESCU."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(associate_rq(calling=b"STORESCU", abstract=abstract.encode()))
    header = _recv_exact(s, 6)
    assert header[0] == 0x02, f"A-ASSOCIATE-AC expected, got PDU type {header[0]:#x}"
    _recv_exact(s, struct.unpack(">L", header[2:])[0])
    return s


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "the listener closed the connection without an answer"
        buf += chunk
    return buf


def _command(
    field: int = 0x0001, uid: str = "1.2.826.0.1.3680043.8.498.99.1", has_dataset: bool = True
) -> bytes:
    from pynetdicom.dsutils import encode

    ds = Dataset()
    ds.AffectedSOPClassUID = CR
    ds.CommandField = field
    ds.MessageID = 1
    ds.Priority = 0
    ds.CommandDataSetType = 0x0000 if has_dataset else 0x0101
    ds.AffectedSOPInstanceUID = uid
    body = encode(ds, True, True)
    assert body is not None
    return struct.pack("<HHLL", 0x0000, 0x0000, 4, len(body)) + body


def _answer(s: socket.socket, seconds: float = 5.0) -> bytes:
    """The next PDU from the listener (header and body)."""
    s.settimeout(seconds)
    header = _recv_exact(s, 6)
    return header + _recv_exact(s, struct.unpack(">L", header[2:])[0])


@pytest.mark.parametrize(
    ("field", "uid"),
    [
        (0x0001, ""),
        (0x7777, "1.2.826.0.1.3680043.8.498.99.1"),
        (0x0001, "1." + "2" * 63),  # 65 characters
        (0x0001, "1.2." + "3" * 66),  # 70 characters
        (0x0001, "1.2.826.0.1.3680043.8.498.99."),  # a trailing dot
    ],
    ids=["empty-uid", "command-0x7777", "uid-65", "uid-70", "uid-trailing-dot"],
)
def test_a_malformed_command_is_aborted_cleanly(
    guarded: Listener, small_instance: Dataset, capfd: pytest.CaptureFixture[str], field: int, uid: str
) -> None:
    capfd.readouterr()
    for _ in range(3):  # again and again: nothing accumulates
        with _raw_association(guarded.port) as s:
            s.sendall(_pdata(1, 0x03, _command(field, uid)))
            pdu = _answer(s)
            assert pdu[0] == A_ABORT, f"A-ABORT expected, got PDU type {pdu[0]:#x}"
            assert drain_until_closed(s, 5) < 5
    reasons = [msg for _, kind, msg in guarded.ledger.events(20) if kind == "guard"]
    assert len(reasons) == 3 and all(
        ("unexpected-command" if field == 0x7777 else "invalid-uid") in m for m in reasons
    )
    assert not uid or all(uid not in m for m in reasons), "no value in the log"
    assert not guarded.parts(), "no temporary file is left behind"
    good_peer_served(guarded)
    modality_served_local(guarded, small_instance)
    assert_quiet_stderr(capfd.readouterr().err, uid)


def assert_quiet_stderr(err: str, value: str = "") -> None:
    """Nothing on stderr but this package's own log lines: no traceback, no pynetdicom noise.

    In-process ``chexdcm`` tests earlier in a run may leave the package's stderr log
    handler installed, so a guard's warning can appear; a traceback or a value never may.
    """
    for line in err.splitlines():
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ chexnet_dicom\.", line), line
    assert "Traceback" not in err
    assert not value or value not in err, "no value on stderr"


def small_instance_bytes(ds: Dataset) -> bytes:
    """``ds`` encoded as a data set (implicit VR little endian, no file meta)."""
    from pynetdicom.dsutils import encode

    body = encode(ds, True, True)
    assert body is not None
    return body


def modality_served_local(lis: Listener, ds: Dataset) -> tuple[float, float]:
    """C-ECHO and C-STORE as STORESCU from 127.0.0.1 (the guarded listener's allow-list)."""
    import copy

    from pydicom.uid import generate_uid

    ae = AE("STORESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.add_requested_context(str(ds.SOPClassUID))
    t0 = time.monotonic()
    assoc = ae.associate("127.0.0.1", lis.port, ae_title="CHEXDCM")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    t1 = time.monotonic()
    c = copy.deepcopy(ds)
    c.SOPInstanceUID = generate_uid()
    status = assoc.send_c_store(c)
    assoc.release()
    assert status.Status == 0x0000
    return t1 - t0, time.monotonic() - t1


def test_an_empty_sop_instance_uid_in_the_data_set_gets_0xa900(
    guarded: Listener, small_instance: Dataset, capfd: pytest.CaptureFixture[str]
) -> None:
    import copy

    capfd.readouterr()
    ae = AE("STORESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    ae.add_requested_context(str(small_instance.SOPClassUID))
    assoc = ae.associate("127.0.0.1", guarded.port, ae_title="CHEXDCM")
    assert assoc.is_established
    c = copy.deepcopy(small_instance)
    c.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.99.7"
    request_uid = c.SOPInstanceUID
    c.SOPInstanceUID = ""
    from pynetdicom.dimse_primitives import C_STORE

    # the command names a valid instance, the data set an empty one
    req = C_STORE()
    req.MessageID = 1
    req.AffectedSOPClassUID = c.SOPClassUID
    req.AffectedSOPInstanceUID = request_uid
    req.Priority = 0
    req.DataSet = __import__("io").BytesIO(small_instance_bytes(c))
    ctx = assoc.accepted_contexts[0].context_id
    assert ctx is not None
    # pause the association's reactor as pynetdicom's own send_c_store does: otherwise the
    # reactor thread may take the response first ("unexpected C-STORE service message")
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(req, ctx)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    assoc.release()
    assert rsp is not None and rsp.Status == 0xA900
    assert not guarded.parts()
    modality_served_local(guarded, small_instance)
    assert_quiet_stderr(capfd.readouterr().err)


def test_a_peer_dripping_p_data_below_the_minimum_rate_is_cut_off(guarded: Listener) -> None:
    """100 bytes of a command every 0.5 s (200 B/s, under the 4096 B/s default) with socket_timeout 2 s."""
    command = _command()
    with _raw_association(guarded.port) as s:
        t0 = time.monotonic()
        cut = None
        s.settimeout(0.5)
        for k in range(60):  # 30 s at most
            try:
                s.sendall(_pdata(1, 0x01, command[:100] if k == 0 else b"\x00" * 100))
                data = s.recv(65536)
                if data == b"" or data[0] == A_ABORT:
                    cut = time.monotonic() - t0
                    break
            except TimeoutError:
                continue
            except OSError:
                cut = time.monotonic() - t0
                break
        assert cut is not None and cut < 6, cut  # grace of socket_timeout (2 s), then the rate check
    assert any("too-slow" in msg for _, kind, msg in guarded.ledger.events(20) if kind == "guard")
    good_peer_served(guarded)


# --------------------------------------------------------------------------- smaller items (item 6)


def test_status_ends_quietly_on_a_closed_pipe(tmp_path: Path) -> None:
    """``chexdcm status | head``: the reader is gone before the first line is written."""
    import subprocess
    import sys

    from chexnet_dicom.node.ledger import NodeLedger
    from chexnet_dicom.node.spool import Spool
    from tests.helpers.node import node_config

    spool = Spool(node_config(tmp_path).spool)
    led = NodeLedger(spool.ledger_path)
    for k in range(200):
        led.note("access", f"event {k}")
    led.close()
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "chexnet_dicom", "status", "--spool", str(spool.root)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    assert done.stderr == "" and done.returncode == 0, done.stderr
