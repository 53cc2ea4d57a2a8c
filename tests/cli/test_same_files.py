"""``check`` and ``infer`` see the same files: one walker, one rule for links and hidden files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chexnet_dicom.cli import main
from chexnet_dicom.dicom.walk import iter_files
from tests.helpers.bundles import make_bundle
from tests.helpers.studies import write_single_image_study


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "export"
    write_single_image_study(root / "a" / "IMG0001", 401)  # no extension
    write_single_image_study(root / "a" / "b" / "img.DCM", 402)  # upper case, nested
    write_single_image_study(root / ".hidden" / "x.dcm", 403)  # hidden folder: ignored
    write_single_image_study(root / "a" / ".x.dcm", 404)  # hidden file: ignored
    outside = write_single_image_study(tmp_path / "elsewhere" / "o.dcm", 405)
    (root / "notes.txt").write_text("not DICOM\n")
    os.symlink(root / "a" / "IMG0001", root / "link_inside.dcm")  # a link to a file inside: read
    os.symlink(outside, root / "link_outside.dcm")  # a link to a file outside: not read
    os.symlink(tmp_path / "elsewhere", root / "dir_outside")  # a link to a folder outside: not followed
    os.symlink(root, root / "a" / "loop")  # a loop back to the root: never followed
    os.symlink(root / "missing.dcm", root / "dangling.dcm")  # a dangling link: read, NOT_DICOM
    return root


def test_the_walker_rule(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    entries = {os.path.relpath(e.path, root): e.reason for e in iter_files([root])}
    assert entries == {
        "dangling.dcm": None,
        "link_inside.dcm": None,
        "link_outside.dcm": "OUTSIDE_ROOT",
        "notes.txt": None,
        "dir_outside": "OUTSIDE_ROOT",
        "a/IMG0001": None,
        "a/b/img.DCM": None,
    }
    # a path named explicitly is always read, hidden or not
    assert [e.path for e in iter_files([root / "a" / ".x.dcm"])] == [str(root / "a" / ".x.dcm")]


def test_check_and_infer_see_the_same_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path)
    assert main(["check", str(root), "--json", "--no-decode"]) == 0
    checked = {
        os.path.relpath(r["path"], root): (r["status"], r["reason"])
        for r in map(json.loads, capsys.readouterr().out.splitlines())
    }
    card = make_bundle(tmp_path / "bundle")
    main(["infer", str(root), "--json", "--weights", str(card), "--out", str(tmp_path / "out"), "--no-sc"])
    doc = json.loads(capsys.readouterr().out)
    inferred: dict[str, tuple[str, str | None]] = {}
    for entry in doc["unassigned"]:
        inferred[os.path.relpath(entry["path"], root)] = (entry["status"], entry["reason"])
    for st in doc["studies"]:
        for im in st["images"]:
            inferred[os.path.relpath(im["path"], root)] = ("accepted", None)
        for s in st["skipped"]:
            inferred[os.path.relpath(s["path"], root)] = (s["status"], s["reason"])
    assert set(inferred) == set(checked)
    # the same verdict, except that infer also knows the link and IMG0001 are one instance:
    # the later in walking order (root files first) is its duplicate
    differing = {p for p in checked if checked[p] != inferred[p]}
    assert differing == {"a/IMG0001"} and inferred["a/IMG0001"] == ("skipped", "DUPLICATE_INSTANCE")
    assert checked["link_outside.dcm"] == inferred["link_outside.dcm"] == ("skipped", "OUTSIDE_ROOT")
    assert checked["dangling.dcm"][1] == "NOT_DICOM"
