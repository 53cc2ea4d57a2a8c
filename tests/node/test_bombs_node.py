"""Decompression bombs sent to the node: a typed answer, a bounded worker, and the next study analysed.

Each bomb is a 16384x16384 16-bit image at the largest rows and columns the default ingest
limits allow, small on the wire (:mod:`chexnet_dicom.testing.bombs`).  The node must either
refuse it at the C-STORE (a failure status) or receive it and record a typed reason; the
worker's peak memory (VmHWM, read from /proc while it lives) stays within the documented
budget; and a good study sent after it is analysed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from chexnet_dicom.node.service import Node
from chexnet_dicom.testing.bombs import write_bomb
from tests.helpers.node import analysed, node_config, storescu, wait_for, write_images

pytestmark = [pytest.mark.network, pytest.mark.slow]

#: Generous bound on the worker's peak RSS: the budget (256 MiB decode, 4096 output grid)
#: plus the model and the libraries; a bomb decoded at full size needs 8 GiB or more.
WORKER_PEAK_BYTES = 3 * 1024**3
#: storescu's option that proposes the bomb's own transfer syntax.
PROPOSE = {"rle": "-xr", "jpegls": "-xt", "j2k": "-xv", "deflated": "-xd"}


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Node, int]]:
    n = Node(node_config(tmp_path), None)
    port = n.start()
    yield n, port
    n.stop(grace=2)


@pytest.mark.parametrize("syntax", ["rle", "jpegls", "j2k", "deflated"])
def test_a_bomb_gets_a_typed_answer_and_the_next_study_is_analysed(
    node: tuple[Node, int], tmp_path: Path, syntax: str
) -> None:
    n, port = node
    assert n.ledger is not None
    bomb = write_bomb(tmp_path / f"bomb-{syntax}.dcm", syntax, 16384)
    sent = storescu(port, bomb, extra=("-v", PROPOSE[syntax]))
    said = sent.stdout + sent.stderr
    # the node answered the C-STORE: success (received) or a failure status (refused at the header)
    assert "Received Store Response" in said, f"the node gave no C-STORE response: {said[-300:]}"
    # refused at the C-STORE (storescu reports the failure status) or received
    good = "1.2.826.0.1.3680043.8.498.97"
    assert storescu(port, *write_images(tmp_path / "good", [73], study=good)).returncode == 0
    row = wait_for(lambda: analysed(n.ledger, good), timeout=240, what="the good study after the bomb")
    assert row["state"] == "analysed"
    if "Received Store Response (Success)" in said:
        # received: the bomb's study must end with a typed reason or a result, never hang
        bomb_study = str(pydicom.dcmread(bomb, stop_before_pixels=True).StudyInstanceUID)
        done = wait_for(lambda: analysed(n.ledger, bomb_study), timeout=240, what="the bomb's study")
        if done["state"] == "failed":
            assert done["failure"], "a failed study names its reason"
    for proc, _ready in n._workers:  # the live worker's peak, from /proc
        if proc.pid and Path(f"/proc/{proc.pid}").exists():
            assert _vm_hwm(proc.pid) < WORKER_PEAK_BYTES, (
                f"{syntax}: worker peak {_vm_hwm(proc.pid) / 2**20:.0f} MiB"
            )
