"""Real DICOM peers for tests: a dcmtk ``storescp`` that keeps every copy, and an Orthanc PACS.

Both are started on ephemeral ports with their own folders under the test's
``tmp_path`` and stopped when the ``with`` block ends.  dcmtk 3.6.7's ``storescp``
and Orthanc 1.10.1 have no option to bind one address, so they listen on all
interfaces; Orthanc is told ``RemoteAccessAllowed: false`` (its HTTP server answers
only loopback) and the tests only ever connect to 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers.shared import require_tool, required

__all__ = ["Orthanc", "StoreSCP", "free_port", "orthanc", "storescp", "wait_for_port"]

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    """A TCP port the kernel has just handed out on 127.0.0.1 (then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"peer exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class StoreSCP:
    """A running dcmtk ``storescp`` (``+uf``: every received copy is its own file)."""

    port: int
    ae_title: str
    dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        """``AE@127.0.0.1:port``."""
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def files(self) -> list[Path]:
        """Every file received so far (one per C-STORE, duplicates included)."""
        return sorted(p for p in self.dir.iterdir() if p.is_file() and not p.name.startswith("."))


@contextmanager
def storescp(
    tmp_path: Path,
    ae_title: str = "STORESCP",
    *,
    port: int | None = None,
    name: str = "storescp",
    syntaxes: str = "+xa",
) -> Iterator[StoreSCP]:
    """Run ``storescp -aet AE -od DIR +uf +xa PORT`` until the block ends.

    ``syntaxes`` is storescp's transfer syntax option (``+xa`` all; ``""``: its
    default, uncompressed only).
    """
    exe = require_tool("storescp")
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = (tmp_path / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [exe, "-aet", ae_title, "-od", str(folder), "+uf", *([syntaxes] if syntaxes else []), str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc)
        yield StoreSCP(port, ae_title, folder, proc)
    finally:
        _stop(proc)
        log.close()


@dataclass
class Orthanc:
    """A running Orthanc with its own storage, on ephemeral ports."""

    dicom_port: int
    http_port: int
    ae_title: str
    root: Path
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        """``AE@127.0.0.1:port`` of its DICOM server."""
        return f"{self.ae_title}@127.0.0.1:{self.dicom_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root (STOW-RS posts to ``.../studies``)."""
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def rest(self, path: str) -> Any:
        """GET ``path`` from the REST API and parse the JSON."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=30) as rsp:
            return json.loads(rsp.read())

    def rest_bytes(self, path: str) -> bytes:
        """GET ``path`` from the REST API as bytes (``/instances/{id}/file``)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=30) as rsp:
            return bytes(rsp.read())

    def instances(self) -> list[dict[str, Any]]:
        """Every instance, with its main DICOM tags (``/instances?expand``)."""
        return list(self.rest("/instances?expand"))


@contextmanager
def orthanc(tmp_path: Path, ae_title: str = "ORTHANC", *, dicomweb: bool = True) -> Iterator[Orthanc]:
    """Run the Debian ``Orthanc`` with a private config, storage and ports until the block ends."""
    exe = require_tool("Orthanc")
    root = tmp_path / "orthanc"
    (root / "db").mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    while http_port == dicom_port:
        http_port = free_port()
    config: dict[str, Any] = {
        "Name": "chexdcm-test",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowStore": True,
        "UnknownSopClassAccepted": False,
        "StorageCompression": False,
        "HttpsCACertificates": "",
        "ConcurrentJobs": 1,
        "Plugins": [],
    }
    if dicomweb:
        if not DICOMWEB_PLUGIN.exists():
            msg = f"Orthanc DICOMweb plugin not installed ({DICOMWEB_PLUGIN}; Debian orthanc-dicomweb)"
            if required():
                raise AssertionError(msg)
            import pytest

            pytest.skip(msg)
        config["Plugins"] = [str(DICOMWEB_PLUGIN)]
        config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": True}
    cfg = root / "config.json"
    cfg.write_text(json.dumps(config, indent=2))
    log = (root / "orthanc.log").open("wb")
    proc = subprocess.Popen([exe, str(cfg)], stdout=log, stderr=subprocess.STDOUT, cwd=root)
    peer = Orthanc(dicom_port, http_port, ae_title, root, proc)
    try:
        wait_for_port(http_port, proc, timeout=60)
        wait_for_port(dicom_port, proc, timeout=60)
        deadline = time.monotonic() + 30
        while True:
            try:
                peer.rest("/system")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield peer
    finally:
        _stop(proc)
        log.close()
