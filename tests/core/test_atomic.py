"""chexnet_dicom.atomic: the one atomic, durable write."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from chexnet_dicom.atomic import PART_SUFFIX, atomic_write, open_atomic, remove_leftovers


def test_bytes_text_and_callback_writes_land_complete(tmp_path: Path) -> None:
    assert atomic_write(tmp_path / "a" / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert atomic_write(tmp_path / "t.txt", "é").read_bytes() == "é".encode()
    out = atomic_write(tmp_path / "c.txt", lambda p: p.write_text("via path"))
    assert out.read_text() == "via path"
    assert not list(tmp_path.rglob(f"*{PART_SUFFIX}"))


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = atomic_write(tmp_path / "x.txt", "old")

    def boom(p: Path) -> None:
        p.write_text("half")
        raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    with pytest.raises(ValueError), open_atomic(target) as fh:
        fh.write(b"half")
        raise ValueError("stop")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_concurrent_writers_never_share_a_temporary(tmp_path: Path) -> None:
    target = tmp_path / "same.txt"
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for _ in range(20):
                atomic_write(target, f"writer {n} " * 1000)
        except BaseException as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    text = target.read_text()
    # the file is one writer's whole text, never a mix or a cut
    assert text in {f"writer {n} " * 1000 for n in range(4)}


def test_mode_and_default_permissions(tmp_path: Path) -> None:
    private = atomic_write(tmp_path / "phi.dcm", b"x", mode=0o600)
    assert private.stat().st_mode & 0o777 == 0o600
    mask = os.umask(0)
    os.umask(mask)
    assert atomic_write(tmp_path / "public.txt", "y").stat().st_mode & 0o777 == 0o666 & ~mask


def test_leftovers_of_a_crash_are_hidden_and_removed(tmp_path: Path) -> None:
    (tmp_path / f".sr.dcm.abc123{PART_SUFFIX}").write_bytes(b"partial")
    (tmp_path / "keep.dcm").write_bytes(b"done")
    removed = remove_leftovers(tmp_path)
    assert [p.name for p in removed] == [f".sr.dcm.abc123{PART_SUFFIX}"]
    assert [p.name for p in tmp_path.iterdir()] == ["keep.dcm"]
