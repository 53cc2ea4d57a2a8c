"""Deliver result files to a PACS: C-STORE over one association, or one STOW-RS request.

Shared by the listener node and ``chexdcm batch --send``.  :func:`send_files` makes
one attempt and says, per file, whether the destination took it;
:func:`send_with_retry` retries what failed for a reason that may pass (the peer was
down, out of resources, a 5xx answer) with capped exponential backoff
(:class:`RetryPolicy`).  A retry never duplicates a result at the destination: the
files carry deterministic UIDs, so a PACS that already holds an instance replaces or
ignores the second copy.  The node keeps its own attempt counts in its ledger (they
survive restarts) and calls :func:`send_files` once per attempt.

Files are streamed from disk: a C-STORE sends the file's bytes as they are when the
peer accepts its transfer syntax (otherwise a decompressed copy, made in memory, in a
syntax it accepts), and a STOW-RS body is written from the files piece by piece.
Logs name files by keyed hashes, never by UIDs or paths.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import secrets
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chexnet_dicom.config import DestinationConfig, NetTimeouts
from chexnet_dicom.errors import TransferError
from chexnet_dicom.logs import phi_ref, redact
from chexnet_dicom.net.destination import Destination, DicomDestination, StowDestination
from chexnet_dicom.net.quiet import quiet_pynetdicom

__all__ = [
    "Delivery",
    "RetryPolicy",
    "SendReport",
    "send_files",
    "send_with_retry",
]

log = logging.getLogger(__name__)

#: Transfer syntaxes every Storage SCP must accept (PS3.5 A.1, A.2).
_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff: ``base_s * 2**n``, at most ``cap_s``, for ``attempts`` tries.

    Attributes
    ----------
    attempts
        Tries in all (1: no retry).
    base_s
        Delay after the first failed try.
    cap_s
        Longest delay.
    """

    attempts: int = 5
    base_s: float = 2.0
    cap_s: float = 300.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_s < 0 or self.cap_s < self.base_s:
            raise ValueError("RetryPolicy needs attempts >= 1 and 0 <= base_s <= cap_s")

    @classmethod
    def of(cls, cfg: DestinationConfig) -> RetryPolicy:
        """The policy of a ``[destination]`` table (``attempts``, ``backoff_s``, ``backoff_cap_s``)."""
        return cls(cfg.attempts, cfg.backoff_s, cfg.backoff_cap_s)

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failed tries (1 for the first)."""
        if failures < 1:
            return 0.0
        return float(min(self.cap_s, self.base_s * 2.0 ** min(failures - 1, 60)))


@dataclass(frozen=True)
class Delivery:
    """What happened to one file.

    Attributes
    ----------
    path
        The file.
    sop_instance_uid
        Its SOP Instance UID ("" when its header could not be read).
    ok
        The destination took it (success, or a warning status).
    status
        The DIMSE status or STOW-RS failure reason; None when no answer came.
    reason
        Why it failed, in words without PHI ("" when ok).
    retryable
        Trying again later may succeed (no answer, out of resources, a server error).
    """

    path: Path
    sop_instance_uid: str
    ok: bool
    status: int | None = None
    reason: str = ""
    retryable: bool = False


@dataclass(frozen=True)
class SendReport:
    """The outcome of sending a set of files to one destination.

    Attributes
    ----------
    destination
        :meth:`describe` of the destination.
    deliveries
        One per file, in the order given.
    attempts
        Tries made (1 for :func:`send_files`).
    """

    destination: str
    deliveries: tuple[Delivery, ...] = ()
    attempts: int = 1

    @property
    def ok(self) -> bool:
        """Every file was taken."""
        return all(d.ok for d in self.deliveries)

    @property
    def sent(self) -> list[Delivery]:
        """The files the destination took."""
        return [d for d in self.deliveries if d.ok]

    @property
    def failed(self) -> list[Delivery]:
        """The files it did not take."""
        return [d for d in self.deliveries if not d.ok]


@dataclass(frozen=True)
class _Meta:
    path: Path
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    size: int = 0


@dataclass(frozen=True)
class _Hooks:
    """The caller's per-file callbacks of :func:`send_files` (either may be None)."""

    on_sending: Callable[[Path], None] | None = None
    on_delivered: Callable[[Delivery], None] | None = None

    def sending(self, path: Path) -> None:
        if self.on_sending is not None:
            self.on_sending(path)

    def answered(self, d: Delivery) -> None:
        if d.ok and self.on_delivered is not None:
            self.on_delivered(d)


def _read_meta(path: Path) -> _Meta | Delivery:
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(path)
        size = path.stat().st_size
        return _Meta(
            path,
            str(meta.MediaStorageSOPClassUID),
            str(meta.MediaStorageSOPInstanceUID),
            str(meta.TransferSyntaxUID),
            size,
        )
    except (OSError, InvalidDicomError, AttributeError, ValueError) as exc:
        return Delivery(path, "", False, None, f"not a DICOM file with file meta ({type(exc).__name__})")


def _status_ok(status: int) -> bool:
    return status == 0x0000 or (status & 0xF000) == 0xB000


def _status_retryable(status: int) -> bool:
    # Out of resources (A7xx) and "resource limitation" (0213) may pass; a refusal of the
    # data set (A9xx, Cxxx, 0122 ...) will not.
    return (status & 0xFF00) == 0xA700 or status == 0x0213


# --------------------------------------------------------------------------- C-STORE


def _send_dimse(
    metas: list[_Meta], dest: DicomDestination, timeouts: NetTimeouts, hooks: _Hooks
) -> list[Delivery]:
    quiet_pynetdicom()
    from pydicom import dcmread
    from pynetdicom import AE, _config

    _config.STORE_SEND_CHUNKED_DATASET = True  # stream files from disk, never load them whole
    ae = AE(ae_title=dest.calling_ae)
    ae.acse_timeout = timeouts.acse_timeout
    ae.dimse_timeout = timeouts.dimse_timeout
    ae.network_timeout = timeouts.network_timeout
    ae.maximum_pdu_size = timeouts.max_pdu
    proposed: set[tuple[str, str]] = set()
    for m in metas:
        if len(ae.requested_contexts) >= 126:
            break
        if (m.sop_class, m.transfer_syntax) not in proposed and m.transfer_syntax not in _UNCOMPRESSED:
            ae.add_requested_context(m.sop_class, m.transfer_syntax)
            proposed.add((m.sop_class, m.transfer_syntax))
        if (m.sop_class, "") not in proposed:
            ae.add_requested_context(m.sop_class, list(_UNCOMPRESSED))
            proposed.add((m.sop_class, ""))
    tls_args = (dest.tls, dest.host) if dest.tls else None
    try:
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls_args)
    except (OSError, ssl.SSLError) as exc:
        raise TransferError(f"{dest.describe()}: cannot connect ({type(exc).__name__})") from exc
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "did not answer the association request"
        raise TransferError(f"{dest.describe()} {why}")
    out: list[Delivery] = []
    try:
        for m in metas:
            hooks.sending(m.path)
            d = _store_one(assoc, m, dcmread)
            out.append(d)
            hooks.answered(d)  # recorded before the next file is sent
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    done = {d.path for d in out}
    for m in metas:
        if m.path not in done:
            out.append(Delivery(m.path, m.sop_instance, False, None, "the association ended early", True))
    return out


def _store_one(assoc: Any, m: _Meta, dcmread: Callable[..., Any]) -> Delivery:
    accepted = [
        cx.transfer_syntax[0]
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == m.sop_class and cx.transfer_syntax
    ]
    if not accepted:
        return Delivery(
            m.path, m.sop_instance, False, 0x0122, "the destination does not accept this SOP class"
        )
    try:
        if m.transfer_syntax in accepted:
            rsp = assoc.send_c_store(m.path)
        else:
            ds = dcmread(os.fspath(m.path))
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                ds.decompress(generate_instance_uid=False)  # the same instance, re-encoded
            syntax = next(ts for ts in _UNCOMPRESSED if ts in accepted)
            from pydicom.uid import UID

            ds.file_meta.TransferSyntaxUID = UID(syntax)
            rsp = assoc.send_c_store(ds)
    except (OSError, ValueError, AttributeError, RuntimeError) as exc:
        return Delivery(
            m.path, m.sop_instance, False, None, f"could not be sent ({redact(type(exc).__name__)})", True
        )
    status = getattr(rsp, "Status", None) if rsp else None
    if status is None:
        return Delivery(m.path, m.sop_instance, False, None, "no C-STORE response (timeout or abort)", True)
    status = int(status)
    if _status_ok(status):
        return Delivery(m.path, m.sop_instance, True, status)
    return Delivery(
        m.path, m.sop_instance, False, status, f"C-STORE status 0x{status:04X}", _status_retryable(status)
    )


# --------------------------------------------------------------------------- STOW-RS


def _body(metas: list[_Meta], boundary: str) -> tuple[int, Iterator[bytes]]:
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")
    sep = b"\r\n"
    length = sum(len(head) + m.size for m in metas) + len(sep) * (len(metas) - 1) + len(tail)

    def chunks() -> Iterator[bytes]:
        for i, m in enumerate(metas):
            yield (sep if i else b"") + head
            sent = 0
            with m.path.open("rb") as fp:
                while sent < m.size:
                    block = fp.read(min(_CHUNK, m.size - sent))
                    if not block:
                        raise TransferError("a result file shrank while it was being sent")
                    sent += len(block)
                    yield block
        yield tail

    return length, chunks()


def _uids(seq: Any) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for item in (seq or {}).get("Value", []) if isinstance(seq, dict) else []:
        if not isinstance(item, dict):
            continue
        uid = ((item.get("00081155") or {}).get("Value") or [None])[0]
        reason = ((item.get("00081197") or {}).get("Value") or [None])[0]
        if isinstance(uid, str):
            out[uid] = int(reason) if isinstance(reason, int) else None
    return out


def _send_stow(
    metas: list[_Meta], dest: StowDestination, timeouts: NetTimeouts, hooks: _Hooks
) -> list[Delivery]:
    parts = urlsplit(dest.url)
    boundary = "chexdcm-" + secrets.token_hex(16)
    length, body = _body(metas, boundary)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeouts.network_timeout, context=dest.tls
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeouts.network_timeout)
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Content-Length": str(length),
        "Accept": "application/dicom+json",
    }
    if dest.authorization:
        headers["Authorization"] = dest.authorization
    for m in metas:
        hooks.sending(m.path)
    try:
        conn.request("POST", parts.path, body=body, headers=headers)
        rsp = conn.getresponse()
        payload = rsp.read(16 * 1024 * 1024)
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        raise TransferError(f"{dest.describe()}: STOW-RS request failed ({type(exc).__name__})") from exc
    finally:
        conn.close()
    code = rsp.status
    if code in (401, 403):
        raise TransferError(f"{dest.describe()}: STOW-RS refused the credentials (HTTP {code})")
    try:
        answer = json.loads(payload) if payload else {}
    except ValueError:
        answer = {}
    if isinstance(answer, list):
        answer = answer[0] if answer and isinstance(answer[0], dict) else {}
    referenced = _uids(answer.get("00081199"))
    failed = _uids(answer.get("00081198"))
    out = []
    for m in metas:
        if m.sop_instance in failed:
            reason = failed[m.sop_instance]
            text = f"STOW-RS failure reason 0x{reason:04X}" if reason is not None else "STOW-RS failed it"
            out.append(
                Delivery(
                    m.path,
                    m.sop_instance,
                    False,
                    reason,
                    text,
                    reason is not None and _status_retryable(reason),
                )
            )
        elif m.sop_instance in referenced or (code == 200 and not failed and not referenced):
            out.append(Delivery(m.path, m.sop_instance, True, 0))
        else:
            retry = code >= 500 or code == 429
            out.append(Delivery(m.path, m.sop_instance, False, None, f"STOW-RS answered HTTP {code}", retry))
    for d in out:  # the per-instance results of the one response
        hooks.answered(d)
    return out


# --------------------------------------------------------------------------- public


def send_files(
    paths: Sequence[str | os.PathLike[str]],
    destination: Destination,
    *,
    timeouts: NetTimeouts | None = None,
    on_sending: Callable[[Path], None] | None = None,
    on_delivered: Callable[[Delivery], None] | None = None,
) -> SendReport:
    """Send DICOM files to ``destination`` once: one association or one STOW-RS request.

    Parameters
    ----------
    paths
        Part 10 files (results of this package, or anything with file meta).
    destination
        From :func:`~chexnet_dicom.net.destination.parse_destination`.
    timeouts
        Network timeouts and the PDU size.
    on_sending
        Called with a file just before it is handed to the transport: before each
        C-STORE request, or for every file before the one STOW-RS request.
    on_delivered
        Called with the :class:`Delivery` of each file the destination took, as soon as
        its answer arrives: after each C-STORE response and before the next file is sent,
        or per instance from the STOW-RS response.  The node records the file in its
        ledger here, so a crash re-sends at most the file whose answer was not recorded.
        An exception raised by either callback ends the attempt and propagates.

    Returns
    -------
    SendReport
        One :class:`Delivery` per file.

    Raises
    ------
    TransferError
        The destination could not be reached, refused the association or the
        credentials; nothing was sent.
    """
    timeouts = timeouts or NetTimeouts()
    files = [Path(p) for p in paths]
    read = [_read_meta(p) for p in files]
    metas = [r for r in read if isinstance(r, _Meta)]
    bad = {r.path: r for r in read if isinstance(r, Delivery)}
    result: dict[Path, Delivery] = dict(bad)
    t0 = time.perf_counter()
    hooks = _Hooks(on_sending, on_delivered)
    if metas:
        if isinstance(destination, DicomDestination):
            got = _send_dimse(metas, destination, timeouts, hooks)
        else:
            got = _send_stow(metas, destination, timeouts, hooks)
        result.update({d.path: d for d in got})
    report = SendReport(destination.describe(), tuple(result[p] for p in files))
    log.info(
        "sent %d of %d file(s) to %s in %.2f s",
        len(report.sent),
        len(files),
        report.destination,
        time.perf_counter() - t0,
    )
    for d in report.failed:
        log.warning(
            "not delivered: %s to %s: %s", phi_ref(d.sop_instance_uid or d.path), report.destination, d.reason
        )
    return report


def send_with_retry(
    paths: Sequence[str | os.PathLike[str]],
    destination: Destination,
    *,
    policy: RetryPolicy | None = None,
    timeouts: NetTimeouts | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SendReport:
    """:func:`send_files`, trying again what failed for a passing reason, with backoff.

    Parameters
    ----------
    paths, destination, timeouts
        As for :func:`send_files`.
    policy
        Tries and delays.
    sleep
        Waits between tries (tests pass a recorder).

    Returns
    -------
    SendReport
        The last outcome of each file; ``attempts`` is the number of tries made.

    Raises
    ------
    TransferError
        The destination could not be reached on any try.
    """
    policy = policy or RetryPolicy()
    files = [Path(p) for p in paths]
    final: dict[Path, Delivery] = {}
    pending = list(files)
    last_error: TransferError | None = None
    reached = False
    tries = 0
    describe = destination.describe()
    for tries in range(1, policy.attempts + 1):
        try:
            report = send_files(pending, destination, timeouts=timeouts)
            reached = True
            final.update({d.path: d for d in report.deliveries})
            pending = [d.path for d in report.deliveries if not d.ok and d.retryable]
        except TransferError as exc:
            last_error = exc
            log.warning("try %d of %d: %s", tries, policy.attempts, exc)
        if not pending:
            break
        if tries < policy.attempts:
            sleep(policy.delay(tries))
    if not reached and last_error is not None:
        raise TransferError(
            f"{describe}: nothing delivered after {tries} tries ({last_error})"
        ) from last_error
    return SendReport(describe, tuple(final[p] for p in files), tries)
