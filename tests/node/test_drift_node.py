"""Drift in a real node: 120 held-out NIH studies raise no alarm, then noised ones raise it within 30.

The node (listener, worker process, ledger) runs as ``chexdcm listen`` does, with the
demo bundle and its drift reference (425 NIH PNGs of its train and validation splits);
dcmtk's storescu sends one-image studies in groups of ten, and the test waits for each
group's analysis before it reads the drift state from the ledger.

In-distribution: the 75 images of the demo model's test split (never in its reference),
sent as 120 studies: the 75, then the first 45 again under new UIDs (a window of 50
never holds one image twice).  Shifted: 60 of the same images with Gaussian noise of
0.2 of the grey range (``benchmarks/ood.py``'s highest noise severity), new UIDs.  The
reference knows no metadata (PNG images), so features and outputs carry the score.
Only the SR is written (``outputs.sc = false``): the node path is the same, with fewer
result files per study.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chexnet_dicom.cli import main
from chexnet_dicom.node.service import Node
from tests.helpers.drift import nih_test_keys, write_nih_studies
from tests.helpers.node import node_config, storescu, wait_for
from tests.helpers.shared import REPO, shared_path

pytestmark = [pytest.mark.network, pytest.mark.slow]

DEMO_CARD = REPO / "chexnet_dicom" / "model" / "data" / "chexnet_demo.card.json"
GROUP = 10


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Node, int]]:
    config = node_config(
        tmp_path,
        **{
            "weights": str(DEMO_CARD),
            "listen.quiet_period": 0.2,
            "outputs.sc": False,
            "outputs.previews": False,
            "drift.window": 50,
            "drift.min_window": 20,
            "drift.alpha": 1e-3,
            "metrics.enabled": True,
            "metrics.port": 0,
        },
    )
    n = Node(config, None)
    port = n.start()
    try:
        yield n, port
    finally:
        n.stop(grace=5)


def send_in_groups(node: Node, port: int, files: list[Path], trace: list[dict[str, Any]]) -> None:
    """Send ``files`` ten at a time; after each group's analysis, append the drift state to ``trace``."""
    ledger = node.ledger
    assert ledger is not None
    for start in range(0, len(files), GROUP):
        group = files[start : start + GROUP]
        before = (ledger.drift_state() or {}).get("observed", 0)
        sent = storescu(port, *group)
        assert sent.returncode == 0, sent.stderr[-2000:]

        def observed(target: int = before + len(group)) -> dict[str, Any] | None:
            state = ledger.drift_state()
            return state if state and state.get("observed", 0) >= target else None

        trace.append(wait_for(observed, timeout=300, what="the group's analysis"))


def test_noise_raises_the_drift_alarm_within_30_studies_and_clean_studies_never_do(
    node: tuple[Node, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n, port = node
    ledger = n.ledger
    assert ledger is not None
    nih = shared_path("nih")
    keys = nih_test_keys()
    assert len(keys) == 75
    clean = write_nih_studies(nih, tmp_path / "clean", keys, tag="clean") + write_nih_studies(
        nih, tmp_path / "again", keys[:45], tag="again"
    )
    shifted = write_nih_studies(nih, tmp_path / "noised", keys[:60], tag="noised", noise_sd=0.2, seed=7)
    t0 = time.perf_counter()
    clean_trace: list[dict[str, Any]] = []
    send_in_groups(n, port, clean, clean_trace)
    state = ledger.drift_state()
    assert state is not None and state["status"] == "on", state
    assert state["observed"] == 120 and state["window"] == 50
    false_alarms = sum(1 for _ts, kind, _m in ledger.events(200) if kind == "drift-alarm")
    clean_scores = [s["score"]["combined"] for s in clean_trace if s.get("score")]
    with capsys.disabled():  # the measured numbers, shown without -s too
        print(
            f"\nin-distribution: 120 studies, {false_alarms} false alarms, combined score after each group "
            + ", ".join(f"{v:.2f}" for v in clean_scores)
        )
    assert false_alarms == 0 and not state["score"]["alarm"] and state["alarm_since"] is None

    shifted_trace: list[dict[str, Any]] = []
    send_in_groups(n, port, shifted, shifted_trace)
    elapsed = time.perf_counter() - t0
    alarms = [m for _ts, kind, m in ledger.events(200) if kind == "drift-alarm"]
    assert alarms, [s["score"]["combined"] for s in shifted_trace]
    first = next(s for s in shifted_trace if s["score"]["alarm"])
    delay = first["alarm_since"]["observation"] - 120
    with capsys.disabled():
        print(
            f"shifted (noise sd 0.2): alarm after {delay} shifted studies; combined score after each group "
            + ", ".join(f"{s['score']['combined']:.2f}" for s in shifted_trace)
            + f"; parts at the alarm {first['score']['parts']}; {elapsed:.0f} s for 180 studies"
        )
    assert 1 <= delay <= 30
    assert len(alarms) == 1  # logged once per crossing, not on every study
    studies = ledger.summary()["studies"]
    assert studies.get("analysed") == 180 and not studies.get("failed"), studies

    # the window holds what the node saw of the headers: binned, no identifiers
    window = ledger.drift_window(50)
    assert len(window) == 50
    meta = window[-1].metadata
    assert meta["transfer_syntax"] == "1.2.840.10008.1.2.1" and meta["view"] in {"PA", "AP"}
    assert meta["sex"] in {"M", "F"} and meta["age_band"] != "unknown"
    assert window[-1].features is not None and window[-1].features.shape == (1024,)
    # chexdcm status and the metrics endpoint show the alarm
    rc = main(["status", "--spool", str(n.spool.root)])
    out = capsys.readouterr().out
    assert rc == 0 and "drift:      combined" in out and "ALARM since" in out, out
    with urllib.request.urlopen(f"http://127.0.0.1:{n.metrics.port}/metrics", timeout=10) as rsp:
        text = rsp.read().decode()
    assert "chexdcm_drift_alarm 1.0" in text
    assert 'chexdcm_drift_score{part="combined"}' in text and 'chexdcm_drift_score{part="features"}' in text
    for line in (line for line in out.splitlines() + text.splitlines() if "drift" in line):
        assert "1.2.826" not in line and "NIH0" not in line  # no UID, no Patient ID
