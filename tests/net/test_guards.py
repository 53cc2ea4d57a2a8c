"""net/guards against the pinned pynetdicom: the internals it replaces exist, and its checks work."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import pynetdicom
import pytest
from pynetdicom import dimse_messages
from pynetdicom.dul import DULServiceProvider

from chexnet_dicom.errors import ConfigError
from chexnet_dicom.net import guards
from chexnet_dicom.net.guards import (
    PINNED_VERSION,
    ReceiveLimits,
    check_pinned,
    command_field,
    command_well_formed,
)


def test_the_pinned_version_is_installed_and_others_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pynetdicom.__version__ == PINNED_VERSION
    check_pinned()
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    with pytest.raises(ConfigError, match=r"3\.0\.4"):
        check_pinned()


def test_the_replaced_internals_exist_in_the_pinned_version() -> None:
    assert callable(DULServiceProvider._read_pdu_data)
    assert callable(DULServiceProvider._decode_pdu)
    assert dimse_messages.NamedTemporaryFile is not None


def _pdv(ctx: int, header: int, payload: bytes) -> bytes:
    return struct.pack(">LBB", len(payload) + 2, ctx, header) + payload


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0, element, len(value)) + value


#: A C-STORE-RQ command set: SOP class and instance UIDs, CommandField, CommandDataSetType.
COMMAND = (
    _element(0x0002, b"1.2.840.10008.5.1.4.1.1.1\x00")
    + struct.pack("<HHLH", 0, 0x0100, 2, 1)
    + struct.pack("<HHLH", 0, 0x0800, 2, 0)
    + _element(0x1000, b"1.2.3.4")
)


def test_command_parsing() -> None:
    assert command_field(COMMAND) == 1
    assert command_well_formed(COMMAND)
    assert not command_well_formed(COMMAND[:-12])  # cut inside an element
    assert not command_well_formed(b"\x01\x00")


def test_framing_caps() -> None:
    limits = ReceiveLimits(instance_bytes=1000, other_dataset_bytes=100, command_bytes=128)
    f = guards._Framing(limits)
    assert f.check(memoryview(_pdv(1, 3, COMMAND))) is None
    assert f.check(memoryview(_pdv(1, 0, b"x" * 900))) is None
    assert f.check(memoryview(_pdv(1, 0, b"x" * 200))) == "instance-too-large"
    f = guards._Framing(limits)
    assert f.check(memoryview(_pdv(1, 0, b"x"))) == "dataset-without-command"
    f = guards._Framing(limits)
    assert f.check(memoryview(_pdv(1, 1, b"\x00" * 129))) == "command-too-large"
    f = guards._Framing(limits)
    assert f.check(memoryview(struct.pack(">L", 1000) + b"\x01\x03")) == "malformed-pdv"


def test_receive_temporaries_never_touch_the_system_temp_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the system temp folder unusable, chunked C-STOREs still land in the spool."""
    from chexnet_dicom.testing import synth
    from tests.helpers.node import start_listener, storescu

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    lis = start_listener(tmp_path)
    try:
        ds = synth.make_dataset(synth.chest_phantom((96, 80), seed=3), seed=3)
        synth.write(ds, tmp_path / "a.dcm")
        assert storescu(lis.port, tmp_path / "a.dcm").returncode == 0
        assert len(lis.stored()) == 1
    finally:
        lis.running.stop(grace=2)
        lis.ledger.close()
        guards.receive_temporaries(None)


def _with(field: int, uid: bytes) -> bytes:
    return (
        _element(0x0002, b"1.2.840.10008.5.1.4.1.1.1\x00")
        + struct.pack("<HHLH", 0, 0x0100, 2, field)
        + struct.pack("<HHLH", 0, 0x0800, 2, 0)
        + _element(0x1000, uid)
    )


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (_with(0x7777, b"1.2.3.4\x00"), "unexpected-command"),
        (_with(0x8001, b"1.2.3.4\x00"), "unexpected-command"),  # a response: this side asked nothing
        (_with(1, b""), "invalid-uid"),
        (_with(1, b"1." + b"2" * 63), "invalid-uid"),  # 65 characters
        (_with(1, b"1.2.3."), "invalid-uid"),
        (_with(1, b"1.2.\xe9"), "invalid-uid"),
        (_with(1, b"1.2.3.4\x00")[:-16], "invalid-uid"),  # no Affected SOP Instance UID
        (_with(1, b"1.2.3.4\x00"), None),
    ],
)
def test_malformed_commands_are_named(command: bytes, reason: str | None) -> None:
    f = guards._Framing(ReceiveLimits())
    assert f.check(memoryview(_pdv(1, 3, command))) == reason


def test_a_message_below_the_minimum_rate_is_too_slow() -> None:
    limits = ReceiveLimits(pdu_timeout=5.0, min_rate=1000.0)
    f = guards._Framing(limits)
    assert f.check(memoryview(_pdv(1, 1, COMMAND[:20]))) is None  # a message begins at t=0
    assert not f.too_slow(4.0, 100, started=0.0)  # within the grace of one PDU timeout
    assert f.too_slow(8.0, 100, started=4.0)  # 200 bytes in 8 s
    fast = guards._Framing(limits)
    assert fast.check(memoryview(_pdv(1, 1, COMMAND[:20]))) is None
    assert not fast.too_slow(8.0, 9000, started=0.0)  # 9000 bytes in 8 s
    idle = guards._Framing(limits)
    assert not idle.too_slow(100.0, 10, started=0.0)  # no message in progress: idle, not slow
