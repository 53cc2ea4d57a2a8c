"""PHI at rest is private (issue 18 item 3): what node, ``infer`` and ``batch`` create is 0700 / 0600.

Each door runs through the command line (which sets the umask), from a fresh output
folder and from one that already exists with mode 0755.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from chexnet_dicom.cli import main
from tests.helpers import fixtures
from tests.helpers.node import NodeProcess, config_port, storescu, wait_for, write_node_config


def modes(root: Path) -> dict[str, int]:
    """Relative path -> permission bits of ``root`` and everything below it."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            out[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return out


def assert_private(root: Path, *, root_private: bool = True) -> dict[str, int]:
    found = modes(root)
    assert len(found) > 1, f"nothing was written under {root}"
    public = {p: f"{m:04o}" for p, m in found.items() if (p != "." or root_private) and m & 0o077}
    assert public == {}, public
    for p, m in found.items():
        if (root / p).is_dir():
            assert m == 0o700 or (p == "." and not root_private), (p, oct(m))
        else:
            assert m == 0o600, (p, oct(m))
    return found


@pytest.fixture(autouse=True)
def _restore_umask() -> Iterator[None]:
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)


card = fixtures.card
study = fixtures.study


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "existing-0755"])
def test_infer_writes_private_files(card: Path, study: Path, tmp_path: Path, existing: bool) -> None:
    os.umask(0o022)  # a usual login umask: the command line makes it 077
    out = tmp_path / "results"
    if existing:
        out.mkdir(mode=0o755)
        os.chmod(out, 0o755)
    assert main(["infer", str(study), "--weights", str(card), "--out", str(out), "--device", "cpu"]) == 0
    assert_private(out, root_private=not existing)


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "existing-0755"])
def test_batch_writes_private_state_and_dicom(
    card: Path, study: Path, tmp_path: Path, existing: bool
) -> None:
    os.umask(0o022)
    out = tmp_path / "run"
    if existing:
        out.mkdir(mode=0o755)
        os.chmod(out, 0o755)
    code = main(
        [
            "batch",
            str(study.parent),
            "--out",
            str(out),
            "--weights",
            str(card),
            "--device",
            "cpu",
            "--write-dicom",
        ]
    )
    assert code == 0
    found = assert_private(out, root_private=not existing)
    assert any(p.startswith("state") and p.endswith(".sqlite") for p in found), sorted(found)
    assert any(p.startswith("dicom") for p in found), sorted(found)


@pytest.mark.network
@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "existing-0755"])
def test_the_node_keeps_spool_outbox_and_ledger_private(
    card: Path, study: Path, tmp_path: Path, existing: bool
) -> None:
    outbox = tmp_path / "outbox"
    if existing:
        outbox.mkdir(mode=0o755)
        os.chmod(outbox, 0o755)
        (outbox / "earlier").mkdir()
        os.chmod(outbox / "earlier", 0o755)
    cfg = write_node_config(tmp_path, spool={"outbox": str(outbox)})
    text = cfg.read_text().replace("[listen]\n", f'weights = "{card}"\n[listen]\n', 1)
    cfg.write_text(text)
    node = NodeProcess(cfg, config_port(cfg))
    try:
        assert storescu(node.port, study / "a_pa.dcm").returncode == 0
        wait_for(lambda: list(outbox.rglob("sr.dcm")), timeout=240, what="the node's SR in the outbox")
    finally:
        node.terminate()
    spool = tmp_path / "spool"
    found = assert_private(spool)
    assert {"ledger.sqlite"} <= set(found), sorted(found)
    outbox_modes = modes(outbox)
    if existing:  # the pre-existing folder is tightened; what was in it is behind a 0700 folder
        outbox_modes.pop("earlier")
    assert {p: f"{m:04o}" for p, m in outbox_modes.items() if m & 0o077} == {}
    assert any(p.endswith("sr.dcm") and m == 0o600 for p, m in outbox_modes.items())
