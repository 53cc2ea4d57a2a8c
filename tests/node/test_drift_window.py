"""The node's drift window: kept in the ledger across a reopen, scored, crossings logged once, status and gauges."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from chexnet_dicom.cli.status import drift_line
from chexnet_dicom.config.node import DriftConfig
from chexnet_dicom.drift import DriftReference, Observation
from chexnet_dicom.node.drift_window import DriftMonitor
from chexnet_dicom.node.ledger import NodeLedger
from chexnet_dicom.node.metrics import _drift_metrics
from tests.helpers.node import node_config

LOGGER = "chexnet_dicom.node.drift_window"
LABELS = tuple(f"finding{i}" for i in range(14))


def observations(rng: np.random.Generator, n: int, shift: float = 0.0) -> list[Observation]:
    out = []
    for _ in range(n):
        probs = rng.beta(2, 5, size=14)
        out.append(
            Observation(
                metadata={"manufacturer": "unknown"},
                probabilities=np.clip(probs + shift / 10, 0, 1),
                features=rng.normal(shift, 1.0, size=16).astype(np.float32),
                present=probs >= 0.5,
            )
        )
    return out


@pytest.fixture
def reference() -> DriftReference:
    return DriftReference.from_observations(observations(np.random.default_rng(0), 300))


def monitor(path: Path, reference: DriftReference) -> DriftMonitor:
    return DriftMonitor(NodeLedger(path), DriftConfig(window=30, min_window=20), reference, "on", LABELS)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_window_survives_a_reopen_alarms_once_and_clears(
    tmp_path: Path, reference: DriftReference, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    rng = np.random.default_rng(1)
    path = tmp_path / "ledger.sqlite"
    first = monitor(path, reference)
    clean = observations(rng, 25)
    assert first.add(clean[:19]) is None  # under min_window: not scored
    scores = [first.add([o]) for o in clean[19:]]
    assert all(s is not None and not s.alarm for s in scores)
    state = first.ledger.drift_state()
    assert state is not None and state["window"] == 25 and state["score"]["window"] == 25
    first.ledger.close()

    second = monitor(path, reference)  # a restart: the window is still there
    assert len(second.ledger.drift_window(30)) == 25
    shifted = [second.add([o]) for o in observations(rng, 30, shift=2.0)]
    assert len(second.ledger.drift_window(1000)) == 30  # pruned to the window size
    crossed = [k for k, s in enumerate(shifted) if s is not None and s.alarm]
    assert crossed and crossed[0] < 20, [s.combined for s in shifted if s is not None]
    alarms = warnings_of(caplog)
    assert len(alarms) == 1 and "reached its threshold" in alarms[0]
    state = second.ledger.drift_state()
    assert state is not None and state["score"]["alarm"]
    assert state["alarm_since"]["observation"] == 25 + crossed[0] + 1

    line = drift_line(state)
    assert "ALARM" in line and "window 30/30" in line and f"{state['score']['combined']:.2f}" in line
    gauges = {m.name: m for m in _drift_metrics(state)}
    combined = {s.labels.get("part"): s.value for s in gauges["chexdcm_drift_score"].samples}
    assert combined["combined"] == pytest.approx(state["score"]["combined"])
    # the reference knows no metadata (as for a PNG-trained bundle): that part is not scored
    assert set(combined) == {"features", "outputs", "combined"}
    assert gauges["chexdcm_drift_alarm"].samples[0].value == 1
    assert gauges["chexdcm_drift_window"].samples[0].value == 30

    back = observations(rng, 30)
    for k in range(0, 30, 5):  # back in distribution: the alarm ends, logged as INFO once
        second.add(back[k : k + 5])
    state = second.ledger.drift_state()
    assert state is not None and not state["score"]["alarm"] and state["alarm_since"] is None
    assert len(warnings_of(caplog)) == 1
    ended = [r for r in caplog.records if r.name == LOGGER and "drift ended" in r.getMessage()]
    assert len(ended) == 1 and ended[0].levelno == logging.INFO
    kinds = [kind for _ts, kind, _msg in second.ledger.events(10)]
    assert kinds.count("drift-alarm") == 1 and kinds.count("drift-cleared") == 1
    second.ledger.close()


def test_without_a_reference_monitoring_is_off_and_status_says_why(tmp_path: Path) -> None:
    config = node_config(tmp_path)
    ledger = NodeLedger(tmp_path / "ledger.sqlite")
    try:
        predictor = SimpleNamespace(card=SimpleNamespace(drift={}, labels=LABELS))
        mon = DriftMonitor.start(config, ledger, predictor)
        assert mon.reference is None
        assert mon.add(observations(np.random.default_rng(2), 30)) is None
        assert ledger.drift_window(100) == []
        state = ledger.drift_state()
        assert state is not None and "no drift reference" in state["status"]
        assert "no drift reference" in drift_line(state)
        assert {m.name for m in _drift_metrics(state)} == {"chexdcm_drift_window"}
    finally:
        ledger.close()


def test_a_reference_that_does_not_fit_the_model_turns_monitoring_off(
    tmp_path: Path, reference: DriftReference
) -> None:
    mon = monitor(tmp_path / "ledger.sqlite", reference)
    try:
        wrong = [
            Observation({}, o.probabilities, np.zeros(8, np.float32), o.present)
            for o in observations(np.random.default_rng(3), 20)
        ]
        assert mon.add(wrong) is None  # 8 features against a 16-feature reference: no crash
        state = mon.ledger.drift_state()
        assert state is not None and state["status"].startswith("off: the drift reference does not fit")
        assert mon.add(wrong) is None and mon.reference is None
    finally:
        mon.ledger.close()
