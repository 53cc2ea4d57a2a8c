"""Error messages built from a library's message carry no PHI: one redaction (``logs.redact``)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pydicom.pixels
import pytest
from pydicom.uid import RLELossless

from chexnet_dicom.dicom import read as read_module
from chexnet_dicom.dicom.decode import decode_stored
from chexnet_dicom.dicom.read import read_dataset, read_header
from chexnet_dicom.errors import CorruptHeaderError, CorruptPixelDataError
from chexnet_dicom.testing.synth import encode, make_dataset, write

NAME, UID, BIRTH = "Doe^Jane", "1.2.826.0.1.3680043.8.498.12345678901", "19700101"
PHI_MESSAGE = f"invalid value '{NAME}' in {UID} (born {BIRTH})"


def _no_phi(message: str) -> None:
    for value in (NAME, UID, BIRTH):
        assert value not in message, message


def _file(tmp_path: Any, ts: str | None = None) -> Any:
    ds = make_dataset(np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64))
    if ts is not None:
        ds = encode(ds, ts)
    path = tmp_path / "x.dcm"
    write(ds, path)
    return path


def test_a_parser_message_is_redacted_in_the_header_error(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _file(tmp_path)

    def failing(*_args: Any, **_kw: Any) -> Iterator[Any]:
        raise ValueError(PHI_MESSAGE)
        yield  # a generator, as pydicom's

    monkeypatch.setattr(read_module, "data_element_generator", failing)
    with pytest.raises(CorruptHeaderError) as info:
        read_header(path)
    assert "ValueError" in str(info.value)  # the library's message is there, redacted
    _no_phi(str(info.value))


def test_a_decoder_message_is_redacted_in_the_pixel_error(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = read_dataset(io.BytesIO(_file(tmp_path, RLELossless).read_bytes()))

    class Decoder:
        is_available = True
        available_plugins: tuple[str, ...] = ()

        def as_array(self, *_args: Any, **_kw: Any) -> Any:
            raise RuntimeError(PHI_MESSAGE)

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda _ts: Decoder())
    with pytest.raises(CorruptPixelDataError) as info:
        decode_stored(ds, fast_path=False)
    assert "RuntimeError" in str(info.value)
    _no_phi(str(info.value))
