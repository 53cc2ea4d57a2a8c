"""parse_destination: the one parser of the node's --dest and batch's --send."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import pytest

from chexnet_dicom.config import DestinationConfig
from chexnet_dicom.errors import ConfigError
from chexnet_dicom.net.destination import (
    DicomDestination,
    StowDestination,
    destination_from_config,
    parse_ae_title,
    parse_destination,
)


def test_dicom_destination() -> None:
    d = parse_destination("PACS@127.0.0.1:4242", calling_ae="NODE")
    assert d == DicomDestination("PACS", "127.0.0.1", 4242, "NODE")
    assert d.describe() == "PACS@127.0.0.1:4242"
    assert parse_destination("PACS@[::1]:104").describe() == "PACS@[::1]:104"
    named = parse_destination("MY AE@pacs.example.org:11112")
    assert isinstance(named, DicomDestination) and named.ae_title == "MY AE"


@pytest.mark.parametrize(
    "text",
    [
        "PACS127.0.0.1:4242",  # no @
        "PACS@127.0.0.1",  # no port
        "PACS@127.0.0.1:0",
        "PACS@127.0.0.1:70000",
        "PACS@127.0.0.1:port",
        "@127.0.0.1:4242",  # empty AE
        "A_TITLE_LONGER_THAN_16@host:1",
        "BAD\\AE@host:1",
        "PACS@bad_host!:1",
        "PACS@[not-v6]:1",
        "ftp://pacs/dicom-web",
    ],
)
def test_bad_destinations_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_destination(text)


def test_ae_title_rules() -> None:
    assert parse_ae_title("CHEXDCM") == "CHEXDCM"
    for bad in ("", "   ", "x" * 17, "A\\B", "A\nB"):
        with pytest.raises(ConfigError):
            parse_ae_title(bad)


def test_stow_url_gets_studies_and_loses_nothing_secret(tmp_path: Path) -> None:
    d = parse_destination("http://127.0.0.1:8042/dicom-web/")
    assert isinstance(d, StowDestination)
    assert d.url == "http://127.0.0.1:8042/dicom-web/studies"
    assert parse_destination("http://h/dicom-web/studies") == StowDestination("http://h/dicom-web/studies")
    with pytest.raises(ConfigError, match="credentials in the URL"):
        parse_destination("https://user:secret@h/dicom-web")


def test_stow_credentials_from_file_or_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("abc123\n")
    d = parse_destination("https://h/dicom-web", token_file=str(token))
    assert isinstance(d, StowDestination) and d.authorization == "Bearer abc123"
    assert isinstance(d.tls, ssl.SSLContext) and d.tls.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert "abc123" not in repr(d)
    monkeypatch.setenv("STOW_BASIC", "user:pw")
    d = parse_destination("https://h/dicom-web", basic_env="STOW_BASIC")
    assert isinstance(d, StowDestination)
    assert d.authorization == "Basic " + base64.b64encode(b"user:pw").decode()
    with pytest.raises(ConfigError, match="not set"):
        parse_destination("https://h/dicom-web", token_env="NO_SUCH_VARIABLE_HERE")
    with pytest.raises(ConfigError, match="cannot be read"):
        parse_destination("https://h/dicom-web", token_file=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="only sent over https"):
        parse_destination("http://h/dicom-web", token_file=str(token))
    with pytest.raises(ConfigError, match="one STOW-RS credential"):
        parse_destination("https://h/dicom-web", token_file=str(token), basic_env="STOW_BASIC")
    with pytest.raises(ConfigError, match="DICOM"):
        parse_destination("PACS@h:1", token_file=str(token))


def test_destination_from_config() -> None:
    assert destination_from_config(DestinationConfig()) is None
    d = destination_from_config(DestinationConfig(url="PACS@127.0.0.1:4242", calling_ae="NODE"))
    assert d == DicomDestination("PACS", "127.0.0.1", 4242, "NODE")
    with pytest.raises(ConfigError):
        DestinationConfig(url="PACS@h:1", attempts=0)
    with pytest.raises(ConfigError):
        DestinationConfig(url="PACS@h:1", tls_cert="c.pem")
