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


COMMAND = struct.pack("<HHLH", 0, 0x0100, 2, 1) + struct.pack("<HHLH", 0, 0x0800, 2, 0)


def test_command_parsing() -> None:
    assert command_field(COMMAND) == 1
    assert command_well_formed(COMMAND)
    assert not command_well_formed(COMMAND[:10])  # CommandDataSetType missing
    assert not command_well_formed(b"\x01\x00")


def test_framing_caps() -> None:
    limits = ReceiveLimits(instance_bytes=1000, other_dataset_bytes=100, command_bytes=64)
    f = guards._Framing(limits)
    assert f.check(memoryview(_pdv(1, 3, COMMAND))) is None
    assert f.check(memoryview(_pdv(1, 0, b"x" * 900))) is None
    assert f.check(memoryview(_pdv(1, 0, b"x" * 200))) == "instance-too-large"
    f = guards._Framing(limits)
    assert f.check(memoryview(_pdv(1, 0, b"x"))) == "dataset-without-command"
    f = guards._Framing(limits)
    assert f.check(memoryview(_pdv(1, 1, b"\x00" * 65))) == "command-too-large"
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
