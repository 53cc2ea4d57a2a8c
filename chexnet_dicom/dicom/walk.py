"""The one folder walker: which files ``check``, ``infer`` and ``batch`` look at.

Walking rule
------------
* Paths are taken in the order given.  A path that is not a folder is always yielded,
  whatever its name or where a link points: the user named it.
* A folder is walked depth-first, entries sorted by name (code point order, so the
  result never depends on the file system), files of a folder before its subfolders.
* Hidden entries (names starting with ``.``) are ignored, files and folders alike; this
  includes the temporaries of :mod:`chexnet_dicom.atomic`.
* Symbolic links to folders are never followed, so a link loop cannot trap the walk; a
  link to a folder *outside* the walked folder is reported with reason ``OUTSIDE_ROOT``
  (one inside it is silent: its target is walked anyway).
* A symbolic link to a file is read when its target lies inside the walked folder,
  else reported with reason ``OUTSIDE_ROOT`` and not read.  A dangling link is yielded
  (reading it fails with ``NOT_DICOM``).
* A folder that cannot be listed is reported with reason ``NOT_DICOM``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from chexnet_dicom.dicom.reasons import NOT_DICOM, OUTSIDE_ROOT

__all__ = ["WalkEntry", "iter_files"]


@dataclass(frozen=True)
class WalkEntry:
    """One entry the walk found.

    Attributes
    ----------
    path
        The path (as reached from the given path; never resolved).
    reason
        None for a file to read; ``OUTSIDE_ROOT`` or ``NOT_DICOM`` for an entry that must
        not (or cannot) be read.
    message
        Why, when ``reason`` is set (no PHI).
    """

    path: str
    reason: str | None = None
    message: str = ""


def _inside(path: str, root_real: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _unlistable(problems: list[OSError], where: str) -> Iterator[WalkEntry]:
    """The folders ``os.walk`` could not list, as entries that cannot be read."""
    while problems:
        failed = problems.pop()
        why = failed.strerror or type(failed).__name__
        yield WalkEntry(str(failed.filename or where), NOT_DICOM, f"cannot list the folder ({why})")


def _walk_folder(root: str) -> Iterator[WalkEntry]:
    root_real = os.path.realpath(root)
    problems: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=problems.append):
        yield from _unlistable(problems, dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(f for f in filenames if not f.startswith(".")):
            full = os.path.join(dirpath, name)
            if os.path.islink(full) and os.path.exists(full) and not _inside(full, root_real):
                yield WalkEntry(
                    full, OUTSIDE_ROOT, "symbolic link to a file outside the walked folder; not read"
                )
            else:
                yield WalkEntry(full)
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full) and not _inside(full, root_real):
                yield WalkEntry(
                    full, OUTSIDE_ROOT, "symbolic link to a folder outside the walked folder; not followed"
                )
    yield from _unlistable(problems, root)


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[WalkEntry]:
    """Yield the files under ``paths`` by the walking rule of the module docstring.

    Parameters
    ----------
    paths
        Files and folders, in the order given.

    Yields
    ------
    WalkEntry
        Each file to read, and each entry that must not be read with its reason.
    """
    for item in paths:
        path = os.fspath(item)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if os.path.isdir(path):
            yield from _walk_folder(path)
        else:
            yield WalkEntry(str(path))
