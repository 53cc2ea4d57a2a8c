"""The node's worker fails a study through the pipeline's ``guarded`` stages and ends on the
shared fatal set (a MemoryError leaves the study queued, never failed); it keeps each
header's bytes from its one read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chexnet_dicom.config import AccessConfig, NodeConfig, SpoolConfig
from chexnet_dicom.dicom.reasons import INTERNAL
from chexnet_dicom.dicom.study import scan
from chexnet_dicom.model.torch_backend import TorchPredictor
from chexnet_dicom.node import carry as carry_module
from chexnet_dicom.node.ledger import Claimed, NodeLedger
from chexnet_dicom.node.spool import Spool
from chexnet_dicom.node.worker import OUTBOX, Analyser
from chexnet_dicom.pipeline import STAGES, failure_of, results_for_paths
from tests.helpers.bundles import make_bundle
from tests.helpers.node import record_ready_studies


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> TorchPredictor:
    return TorchPredictor.from_card(
        make_bundle(tmp_path_factory.mktemp("bundle")), device="cpu", precision="fp32"
    )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[NodeConfig, Spool, NodeLedger]]:
    config = NodeConfig(access=AccessConfig(open=True), spool=SpoolConfig(dir=str(tmp_path / "spool")))
    spool = Spool(config.spool)
    ledger = NodeLedger(spool.ledger_path)
    yield config, spool, ledger
    ledger.close()


def _claim(spool: Spool, ledger: NodeLedger, seed: int) -> Claimed:
    record_ready_studies(spool, ledger, [seed])
    (claimed,) = ledger.claim("worker-test", 1)
    return claimed


def _failing(predictor: TorchPredictor, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def predict_many(*_args: object, **_kw: object) -> object:
        raise error

    monkeypatch.setattr(predictor, "predict_many", predict_many)


def test_a_memory_error_ends_the_worker_and_leaves_the_study_queued(
    node: tuple[NodeConfig, Spool, NodeLedger], predictor: TorchPredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, spool, ledger = node
    claimed = _claim(spool, ledger, 11)
    _failing(predictor, monkeypatch, MemoryError())
    with pytest.raises(MemoryError):
        Analyser(config, spool, ledger, predictor, OUTBOX).analyse(claimed)
    row = ledger.study(claimed.study_uid)
    assert row is not None and row["state"] == "analysing" and not row["failure"]
    ledger.recover()  # what the supervisor does when it starts the next worker
    row = ledger.study(claimed.study_uid)
    assert row is not None and row["state"] == "ready"


def test_a_study_s_own_error_fails_it_with_a_stage_of_the_vocabulary(
    node: tuple[NodeConfig, Spool, NodeLedger], predictor: TorchPredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, spool, ledger = node
    claimed = _claim(spool, ledger, 12)
    _failing(predictor, monkeypatch, RuntimeError("boom"))
    Analyser(config, spool, ledger, predictor, OUTBOX).analyse(claimed)  # does not raise
    row = ledger.study(claimed.study_uid)
    assert row is not None and row["state"] == "failed" and row["failure"] == INTERNAL
    assert "in the predict stage" in row["failure_message"]


def test_stage_names_outside_the_vocabulary_are_refused() -> None:
    assert "node" not in STAGES
    with pytest.raises(ValueError, match="unknown stage"):
        failure_of(RuntimeError("x"), "node")


def test_the_records_keep_the_header_bytes_of_the_worker_s_one_read(
    node: tuple[NodeConfig, Spool, NodeLedger], predictor: TorchPredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, spool, ledger = node
    claimed = _claim(spool, ledger, 13)

    def no_second_read(*_args: object, **_kw: object) -> bytes:
        raise AssertionError("the header was read again")

    monkeypatch.setattr(carry_module, "source_header", no_second_read)
    Analyser(config, spool, ledger, predictor, OUTBOX).analyse(claimed)
    row = ledger.study(claimed.study_uid)
    assert row is not None and row["state"] == "analysed", row
    # and what carry keeps is the file's bytes up to its pixel data, from the scan's read
    path = spool.absolute(claimed.instances[0].path)
    found = scan([path], keep_raw=True)
    (result,) = results_for_paths(found, predictor)
    images, _skipped = carry_module.carry(result, headers=carry_module.header_bytes(found))
    (record,) = images.values()
    raw = path.read_bytes()
    assert raw.startswith(record.header) and 0 < len(record.header) < len(raw)
    assert carry_module.restore_image(record, result.images[0].preprocessing).dataset.SOPInstanceUID == (
        claimed.instances[0].sop_uid
    )
