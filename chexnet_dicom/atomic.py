"""Atomic, durable file writes: the one way this package writes a file.

Every file chexnet-dicom writes (DICOM results, previews, sidecars, model cards and
weights, downloads, ONNX caches, training checkpoints and logs, the node's spool) goes
through :func:`atomic_write` or :func:`open_atomic`:

1. the content is written to a temporary file with a *unique* name in the target folder
   (``.<name>.<random>.part``: hidden, so folder walks skip it, and never shared by two
   concurrent writers);
2. the temporary file is flushed and ``fsync``'ed;
3. it is renamed onto the target (:func:`os.replace`, atomic on POSIX);
4. the folder is ``fsync``'ed, so the rename itself survives a power cut.

A reader therefore sees either the old file or the complete new one, never a part, and
a crash leaves at most a ``.part`` file behind (:func:`remove_leftovers` cleans them).
On any failure the temporary file is removed and the target is untouched.

PHI at rest is private: the command line runs with :data:`PRIVATE_UMASK`
(:func:`use_private_umask`), so every folder it creates is 0700 and every file 0600
(SQLite's ``-wal`` and ``-shm`` take the mode of their database file), and
:func:`private_dir` tightens a folder for PHI that already exists with group or other
bits (the node's spool and outbox).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "PART_SUFFIX",
    "PRIVATE_UMASK",
    "PartFile",
    "atomic_write",
    "fsync_dir",
    "open_atomic",
    "private_dir",
    "remove_leftovers",
    "use_private_umask",
]

log = logging.getLogger(__name__)

#: The umask of every ``chexdcm`` process: folders 0700, files 0600.
PRIVATE_UMASK = 0o077

#: Suffix of the temporary files (their names also start with a dot).
PART_SUFFIX = ".part"


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


#: Permissions of a written file when the caller gives none (as ``open`` would create it).
_DEFAULT_MODE = _default_mode()


def use_private_umask() -> int:
    """Set the process umask to :data:`PRIVATE_UMASK` (call once, before any thread starts).

    Returns
    -------
    int
        The previous umask.
    """
    global _DEFAULT_MODE
    previous = os.umask(PRIVATE_UMASK)
    _DEFAULT_MODE = 0o666 & ~PRIVATE_UMASK
    return previous


def private_dir(path: str | os.PathLike[str], what: str) -> Path:
    """Create a folder for PHI as 0700, or tighten an existing one to 0700.

    Parameters
    ----------
    path
        The folder (parents are created, with the umask's mode).
    what
        Its name in the log line when an existing folder had group or other bits.

    Returns
    -------
    Path
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    bits = stat.S_IMODE(folder.stat().st_mode)
    if bits & 0o077:
        os.chmod(folder, 0o700)
        log.warning("%s had mode %04o (readable by other users); tightened to 0700", what, bits)
    return folder


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """``fsync`` a folder so that a rename or a new entry in it is durable.

    Parameters
    ----------
    folder
        The folder.  Platforms that cannot open folders (Windows) are ignored.
    """
    try:
        fd = os.open(os.fspath(folder), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - not POSIX
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary(target: Path, parents: bool) -> tuple[int, Path]:
    if parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=PART_SUFFIX)
    return fd, Path(name)


def _commit(tmp: Path, target: Path, mode: int | None) -> None:
    os.chmod(tmp, _DEFAULT_MODE if mode is None else mode)
    os.replace(tmp, target)
    fsync_dir(target.parent)


@contextlib.contextmanager
def open_atomic(
    path: str | os.PathLike[str], *, mode: int | None = None, parents: bool = True
) -> Iterator[IO[bytes]]:
    """Open a binary file that appears at ``path`` only once it is complete and durable.

    Parameters
    ----------
    path
        The target file (parent folders are created).
    mode
        Permission bits of the result; by default ``0o666`` less the umask.
    parents
        Create missing parent folders (else a missing folder is a :class:`FileNotFoundError`).

    Yields
    ------
    binary file object
        Write the content to it. When the ``with`` block ends normally the file is
        flushed, fsync'ed and renamed onto ``path`` and the folder fsync'ed; when it
        raises, the temporary file is removed and ``path`` is unchanged.
    """
    target = Path(path)
    fd, tmp = _temporary(target, parents)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _commit(tmp, target, mode)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class PartFile:
    """A file written piece by piece, from any thread, that appears only when committed.

    The streaming form of :func:`open_atomic` for writers that are called back (a
    network receive): the same unique ``.part`` temporary in the target folder, fsync,
    rename and folder fsync on :meth:`commit`; :meth:`discard` removes it.

    Parameters
    ----------
    path
        The target file.
    mode
        Permission bits of the result; by default ``0o666`` less the umask.
    parents
        Create missing parent folders.

    Attributes
    ----------
    target
        The target file.
    part
        The temporary file while it is being written.
    size
        Bytes written so far.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, mode: int | None = None, parents: bool = True
    ) -> None:
        self.target = Path(path)
        self.mode = mode
        self._fd, self.part = _temporary(self.target, parents)
        self.size = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data`` (all of it, or raise :class:`OSError`)."""
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.write(self._fd, view[done:])
        self.size += done
        return done

    def commit(self) -> Path:
        """fsync, rename onto the target and fsync its folder; the target is then durable.

        Returns
        -------
        Path
            The target.
        """
        try:
            os.fsync(self._fd)
        finally:
            self._close()
        try:
            _commit(self.part, self.target, self.mode)
        except BaseException:
            self.part.unlink(missing_ok=True)
            raise
        return self.target

    def discard(self) -> None:
        """Close and remove the temporary file (the target is untouched)."""
        self._close()
        self.part.unlink(missing_ok=True)

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._fd)


def atomic_write(
    path: str | os.PathLike[str],
    content: bytes | str | Callable[[Path], object],
    *,
    encoding: str = "utf-8",
    mode: int | None = None,
    parents: bool = True,
) -> Path:
    """Write a file atomically and durably (see the module docstring).

    Parameters
    ----------
    path
        The target file (parent folders are created).
    content
        The bytes or text to write, or a function that writes the complete content to
        the temporary path it is given (for writers that need a path: pydicom, Pillow,
        torch, safetensors, ONNX).
    encoding
        Encoding of ``content`` when it is text.
    mode
        Permission bits of the result; by default ``0o666`` less the umask.
    parents
        Create missing parent folders (else a missing folder is a :class:`FileNotFoundError`).

    Returns
    -------
    Path
        ``path``.
    """
    target = Path(path)
    if isinstance(content, (bytes, bytearray, memoryview, str)):
        data = content.encode(encoding) if isinstance(content, str) else bytes(content)
        with open_atomic(target, mode=mode, parents=parents) as fh:
            fh.write(data)
        return target
    fd, tmp = _temporary(target, parents)
    os.close(fd)
    try:
        content(tmp)
        with open(tmp, "rb+") as fh:  # the writer may have closed (or replaced) the file
            os.fsync(fh.fileno())
        _commit(tmp, target, mode)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def remove_leftovers(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files an interrupted writer left in ``folder`` (not recursive).

    Parameters
    ----------
    folder
        A folder this package writes into.

    Returns
    -------
    list of Path
        The files removed.
    """
    removed = []
    for entry in Path(folder).glob(f".*{PART_SUFFIX}"):
        if entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
