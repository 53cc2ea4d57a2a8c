"""The node's work settings: claimed studies predicted in shared batches, several workers
sharing only the ledger (a dead one's claims go back to the queue), their CPU share."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

import chexnet_dicom.node.worker as worker_module
from chexnet_dicom.config import AccessConfig, NodeConfig, OutputOptions, SpoolConfig, WorkConfig
from chexnet_dicom.errors import ConfigError
from chexnet_dicom.model.torch_backend import TorchPredictor
from chexnet_dicom.node.ledger import NodeLedger
from chexnet_dicom.node.spool import Spool
from chexnet_dicom.node.worker import OUTBOX, Analyser, load_node_predictor
from tests.helpers.bundles import make_bundle
from tests.helpers.node import record_ready_studies


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> TorchPredictor:
    return TorchPredictor.from_card(
        make_bundle(tmp_path_factory.mktemp("bundle")), device="cpu", precision="fp32"
    )


def _node(root: Path, max_studies: int) -> tuple[NodeConfig, Spool, NodeLedger]:
    config = NodeConfig(
        access=AccessConfig(open=True),
        outputs=OutputOptions(sc=False, previews=False),  # the SR and the sidecar: enough here
        spool=SpoolConfig(dir=str(root / "spool")),
        work=WorkConfig(max_studies=max_studies),
    )
    spool = Spool(config.spool)
    return config, spool, NodeLedger(spool.ledger_path)


def _probabilities(spool: Spool) -> dict[str, list[float]]:
    """Study folder -> the sidecar's probabilities of its image."""
    out = {}
    for sidecar in sorted(spool.outbox.glob("*/1/*.json")):
        doc = json.loads(sidecar.read_text())
        (image,) = doc["images"]
        out[sidecar.parent.parent.name] = [
            image["probabilities"][name] for name in sorted(image["probabilities"])
        ]
    return out


def test_claimed_studies_share_one_prediction_pass_and_give_the_same_results(
    tmp_path: Path, predictor: TorchPredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = worker_module.results_for_paths

    def counted(found: Any, *a: Any, **k: Any) -> Any:
        calls.append(len(found.studies))
        return real(found, *a, **k)

    monkeypatch.setattr(worker_module, "results_for_paths", counted)
    seeds = [31, 32]
    together = _node(tmp_path / "together", max_studies=4)
    one_by_one = _node(tmp_path / "alone", max_studies=1)
    try:
        for config, spool, ledger in (together, one_by_one):
            record_ready_studies(spool, ledger, seeds)
            analyser = Analyser(config, spool, ledger, predictor, OUTBOX)
            while analyser.run_once():
                pass
            assert {s["state"] for s in ledger.studies()} == {"analysed"}
        assert calls == [2, 1, 1]  # one shared pass, then one per study
        shared, alone = _probabilities(together[1]), _probabilities(one_by_one[1])
        assert len(shared) == 2 and shared.keys() == alone.keys()
        for ref, probs in shared.items():
            assert probs == pytest.approx(alone[ref], abs=1e-5)
    finally:
        together[2].close()
        one_by_one[2].close()


def test_a_failed_shared_pass_falls_back_to_one_study_at_a_time(
    tmp_path: Path, predictor: TorchPredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, spool, ledger = _node(tmp_path, max_studies=4)
    real = worker_module.results_for_paths

    def shared_fails(found: Any, *a: Any, **k: Any) -> Any:
        if len(found.studies) > 1:
            raise RuntimeError("shared pass")
        return real(found, *a, **k)

    monkeypatch.setattr(worker_module, "results_for_paths", shared_fails)
    try:
        record_ready_studies(spool, ledger, [41, 42])
        assert Analyser(config, spool, ledger, predictor, OUTBOX).run_once() == 2
        assert [s["state"] for s in ledger.studies()] == ["analysed", "analysed"]
    finally:
        ledger.close()


def test_a_dead_worker_s_claims_go_back_to_the_queue_and_the_other_s_stay(tmp_path: Path) -> None:
    _config, spool, ledger = _node(tmp_path, max_studies=1)
    try:
        record_ready_studies(spool, ledger, [51, 52, 53])
        (mine,) = ledger.claim(worker_module.worker_name(101), 1)
        (theirs,) = ledger.claim(worker_module.worker_name(102), 1)
        assert ledger.release_claims(worker_module.worker_name(101)) == 1
        state = {s["study_uid"]: s["state"] for s in ledger.studies()}
        assert state[mine.study_uid] == "ready" and state[theirs.study_uid] == "analysing"
        (again,) = ledger.claim(worker_module.worker_name(102), 1)
        assert again.study_uid != theirs.study_uid
    finally:
        ledger.close()


def test_several_workers_share_the_cpus_and_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    class Started:
        predictor = object()

    def start_model(_weights: Any, runtime: Any) -> Started:
        seen.append(runtime)
        return Started()

    import chexnet_dicom.model.startup as startup

    monkeypatch.setattr(startup, "start_model", start_model)
    monkeypatch.setattr("chexnet_dicom.model.predictor.available_cpus", lambda: 4)
    base = NodeConfig(access=AccessConfig(open=True))
    load_node_predictor(dataclasses.replace(base, work=WorkConfig(workers=2)))
    load_node_predictor(base)
    pinned = dataclasses.replace(base.runtime, threads=3)
    load_node_predictor(dataclasses.replace(base, work=WorkConfig(workers=2), runtime=pinned))
    assert [r.threads for r in seen] == [2, 0, 3]
    with pytest.raises(ConfigError, match="nice"):
        WorkConfig(nice=20)
