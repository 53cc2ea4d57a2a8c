"""The node's spool: a durable inbox of received instances and the results awaiting delivery.

Layout (created mode 0700: received images are PHI)::

    <spool>/
      node.lock        held (flock) by the running node: one node per spool
      log.key          the node's keyed-hash key (0600), so log references survive restarts
      ledger.sqlite    the SQLite ledger (node/ledger.py), WAL mode
      store/ab/<id>.dcm   received instances; <id> is 32 random hex digits, never a UID
      results/<n>/     the built results of delivery <n> (sr.dcm, sc-*.dcm)
      outbox/<study ref>/  results when no destination is configured

Receiving
---------
pynetdicom writes each C-STORE data set, as it arrives, into an :class:`IncomingFile`
(:func:`chexnet_dicom.net.guards.receive_temporaries` sends it here instead of the
system temp folder): a ``.part`` file beside its final name in ``store/`` (via
:class:`chexnet_dicom.atomic.PartFile`), hashed (SHA-256) and counted while it is
written, never decoded.  :meth:`Spool.commit` fsyncs it, renames it onto
``store/ab/<id>.dcm`` and fsyncs the folder; only then does the ledger get its row and
the peer its success status.  A write that fails (a full disk) marks the file failed
instead of raising into pynetdicom's reader; the handler answers 0xA700 and removes it.

Restart recovery (:meth:`Spool.recover`): ``.part`` files are removed (their instances
were never acknowledged); a renamed file without a ledger row is adopted by the caller
(it was durable before the crash, and processing it again is safe).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from chexnet_dicom.atomic import PART_SUFFIX, PartFile, fsync_dir, private_dir, remove_leftovers
from chexnet_dicom.config import SpoolConfig
from chexnet_dicom.errors import ConfigError, StorageError
from chexnet_dicom.faults import active, fault

__all__ = ["IncomingFile", "Spool"]

log = logging.getLogger(__name__)

_ID = re.compile(r"[0-9a-f]{32}")


class IncomingFile:
    """One C-STORE data set being received: the file object pynetdicom writes into.

    It offers what pynetdicom uses of ``NamedTemporaryFile(delete=False)``: ``name``
    (the temporary path, which pynetdicom unlinks after the handler: a kept file is
    renamed away first), ``write``, ``file.flush`` and ``close``.

    Attributes
    ----------
    file_id
        The instance's spool identifier (random, never derived from a UID).
    owner
        The association thread that receives it (for cleaning up after an abort).
    size
        Bytes written (preamble, file meta and data set).
    error
        Why writing stopped (``"ENOSPC"``, ``"too-large"``), or None.
    """

    def __init__(self, spool: Spool, file_id: str, owner: object, max_bytes: int) -> None:
        self.file_id = file_id
        self.owner = owner
        self.max_bytes = max_bytes
        self.error: str | None = None
        self._sha = hashlib.sha256()
        self._part = PartFile(spool.store_path(file_id), mode=0o600)
        self.name = str(self._part.part)
        self.file = self  # pynetdicom calls ``.file.flush()``
        self._spool = spool

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._part.size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append and hash ``data``; never raises (a failure is recorded in :attr:`error`)."""
        if self.error is not None or self._part.closed:
            return len(data)
        if self._part.size + len(data) > self.max_bytes:
            self.error = "too-large"
            return len(data)
        fault("receive.streaming")
        try:
            if active("receive.enospc"):
                raise OSError(errno.ENOSPC, "No space left on device (injected)")
            self._part.write(data)
        except OSError as exc:
            self.error = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            log.warning("receiving an instance failed (%s); it will be refused", self.error)
            return len(data)
        self._sha.update(data)
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: every write goes straight to the file (fsync on commit)."""

    def close(self) -> None:
        """Close the temporary (pynetdicom calls this after the handler); an uncommitted one is removed."""
        if not self._part.closed:
            self.discard()

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of everything written."""
        return self._sha.hexdigest()

    def commit(self) -> Path:
        """Make the instance durable under its final name (fsync, rename, folder fsync).

        Raises
        ------
        StorageError
            The disk refused (full, read-only); nothing is left behind.
        """
        if self.error is not None:
            raise StorageError(f"the instance could not be written ({self.error})")
        try:
            path = self._part.commit()
        except OSError as exc:
            self._part.discard()
            raise StorageError(f"the instance could not be made durable ({exc.strerror or exc})") from exc
        finally:
            self._spool._forget(self)
        return path

    def discard(self) -> None:
        """Remove the temporary file (a refused or abandoned instance)."""
        self._part.discard()
        self._spool._forget(self)


class Spool:
    """The spool folder (see the module docstring).

    Parameters
    ----------
    config
        ``[spool]``: folder, free-space watermark, size cap.
    """

    def __init__(self, config: SpoolConfig) -> None:
        self.config = config
        self.root = Path(config.dir).resolve()
        self.store = self.root / "store"
        self.results = self.root / "results"
        self.outbox = Path(config.outbox).resolve() if config.outbox else self.root / "outbox"
        for name, folder in (
            ("spool", self.root),
            ("spool store", self.store),
            ("spool results", self.results),
            ("outbox", self.outbox),
        ):
            private_dir(folder, name)  # an existing folder with group/other bits is tightened
        self._incoming: dict[int, IncomingFile] = {}
        self._lock = threading.Lock()
        self._lock_fd: int | None = None

    # -- paths

    @property
    def ledger_path(self) -> Path:
        """The SQLite ledger."""
        return self.root / "ledger.sqlite"

    @property
    def key_path(self) -> Path:
        """The node's log key."""
        return self.root / "log.key"

    def store_path(self, file_id: str) -> Path:
        """Where instance ``file_id`` is kept."""
        if not _ID.fullmatch(file_id):
            raise ValueError("not a spool file id")
        return self.store / file_id[:2] / f"{file_id}.dcm"

    def results_folder(self, delivery: int) -> Path:
        """The folder of delivery ``delivery``'s built results."""
        return self.results / str(int(delivery))

    def relative(self, path: Path) -> str:
        """``path`` relative to the spool (what the ledger records)."""
        return str(path.resolve().relative_to(self.root))

    def absolute(self, relative: str) -> Path:
        """A ledger path inside the spool; refuses anything that leaves it."""
        path = (self.root / relative).resolve()
        if self.root not in path.parents:
            raise ValueError("a ledger path outside the spool")
        return path

    # -- the running node

    def acquire(self) -> None:
        """Hold the spool's lock for this process (released when it exits).

        Raises
        ------
        ConfigError
            Another node already runs on this spool.
        """
        fd = os.open(self.root / "node.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"another node is already running on the spool {self.root}") from None
        self._lock_fd = fd

    def release(self) -> None:
        """Let go of the spool's lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- receiving

    def incoming(self, owner: object, max_bytes: int) -> IO[bytes]:
        """A new :class:`IncomingFile` for the association thread ``owner``."""
        file = IncomingFile(self, secrets.token_hex(16), owner, max_bytes)
        with self._lock:
            self._incoming[id(file)] = file
        return file  # type: ignore[return-value]

    def find(self, name: str) -> IncomingFile | None:
        """The unfinished instance whose temporary file is ``name``."""
        with self._lock:
            return next((f for f in self._incoming.values() if f.name == name), None)

    def _forget(self, file: IncomingFile) -> None:
        with self._lock:
            self._incoming.pop(id(file), None)

    def abandon(self, owner: object) -> int:
        """Remove every unfinished instance of the association ``owner`` (it ended or aborted).

        Returns
        -------
        int
            How many were removed.
        """
        with self._lock:
            mine = [f for f in self._incoming.values() if f.owner is owner]
        for file in mine:
            file.discard()
        return len(mine)

    def free_bytes(self) -> int:
        """Bytes available to this process on the spool's file system."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def check_space(self, stored_bytes: Callable[[], int], incoming: int) -> None:
        """Refuse an instance when the disk is (nearly) full or the spool above its cap.

        Parameters
        ----------
        stored_bytes
            What the spool holds now (the ledger's sum), asked only when a cap is set.
        incoming
            The new instance's size.

        Raises
        ------
        StorageError
            Below ``min_free_bytes`` free, or above ``max_bytes`` (when set).
        """
        if self.free_bytes() < self.config.min_free_bytes + incoming:
            raise StorageError("the spool's disk is below its free-space watermark")
        if self.config.max_bytes and stored_bytes() + incoming > self.config.max_bytes:
            raise StorageError("the spool is above its size cap (spool.max_bytes)")

    # -- restart recovery and retention

    def _store_folders(self) -> Iterator[Path]:
        for folder in sorted(self.store.iterdir()):
            if folder.is_dir() and len(folder.name) == 2:
                yield folder

    def recover(self) -> tuple[int, dict[str, Path]]:
        """Remove interrupted writes; list the stored instances.

        Returns
        -------
        removed : int
            ``.part`` files removed (instances never acknowledged, results half written).
        stored : dict
            File id -> path of every stored instance (the caller adopts those the
            ledger does not know).
        """
        removed = 0
        stored: dict[str, Path] = {}
        for folder in self._store_folders():
            removed += len(remove_leftovers(folder))
            for entry in folder.iterdir():
                if entry.suffix == ".dcm" and _ID.fullmatch(entry.stem):
                    stored[entry.stem] = entry
        for folder in [self.results, *self.results.iterdir()]:
            if folder.is_dir():
                removed += len(remove_leftovers(folder))
        return removed, stored

    def remove_file(self, relative: str) -> None:
        """Delete a spool file named by the ledger (missing is fine) and fsync its folder."""
        path = self.absolute(relative)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)

    def remove_tree(self, folder: Path) -> None:
        """Delete a results folder inside the spool."""
        folder = folder.resolve()
        if self.root not in folder.parents:
            raise ValueError("a folder outside the spool")
        shutil.rmtree(folder, ignore_errors=True)

    def used_parts(self) -> int:
        """``.part`` files now in the store (receives in progress)."""
        return sum(1 for f in self._store_folders() for _ in f.glob(f".*{PART_SUFFIX}"))
