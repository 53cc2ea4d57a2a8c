"""A STOW-RS destination for tests that keeps every copy it receives (Orthanc keeps one).

:func:`stow_peer` serves ``POST /dicom-web/studies`` on 127.0.0.1 (an ephemeral port): each
part of a ``multipart/related`` body is written to a file of its own and answered in the
response's Referenced SOP Sequence, as a DICOMweb server does (PS3.18 10.5).  The fault
tests count deliveries there, at the transport.
"""

from __future__ import annotations

import collections
import contextlib
import io
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pydicom import dcmread

__all__ = ["StowPeer", "stow_peer"]


@dataclass
class StowPeer:
    """A running STOW-RS test server."""

    url: str
    folder: Path
    requests: list[int] = field(default_factory=list)  # instances per request, in order

    def received(self) -> collections.Counter[str]:
        """SOP Instance UID -> how many times it was received."""
        return collections.Counter(
            str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in sorted(self.folder.glob("*.dcm"))
        )


def _parts(body: bytes, content_type: str) -> list[bytes]:
    boundary = next(
        p.split("=", 1)[1].strip('"') for p in content_type.split(";") if p.strip().startswith("boundary=")
    )
    out = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        _head, _, data = chunk.partition(b"\r\n\r\n")
        out.append(data[:-2] if data.endswith(b"\r\n") else data)
    return out


@contextlib.contextmanager
def stow_peer(tmp_path: Path) -> Iterator[StowPeer]:
    """Serve a STOW-RS endpoint until the block ends (see the module docstring)."""
    folder = tmp_path / "stow-received"
    folder.mkdir(parents=True, exist_ok=True)
    numbers = itertools.count()
    lock = threading.Lock()
    peer = StowPeer("", folder)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            items = []
            parts = _parts(body, self.headers.get("Content-Type", ""))
            for data in parts:
                ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
                with lock:
                    (folder / f"copy-{next(numbers):05d}.dcm").write_bytes(data)
                items.append(
                    {
                        "00081150": {"vr": "UI", "Value": [str(ds.SOPClassUID)]},
                        "00081155": {"vr": "UI", "Value": [str(ds.SOPInstanceUID)]},
                    }
                )
            peer.requests.append(len(parts))
            answer = json.dumps({"00081199": {"vr": "SQ", "Value": items}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    peer.url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        server.shutdown()
        server.server_close()
