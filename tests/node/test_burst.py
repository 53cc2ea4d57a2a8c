"""A burst into a node with two workers: C-ECHO stays prompt while they analyse, and every
study is analysed and delivered exactly once although two processes claim from one ledger."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pynetdicom import AE

from tests.helpers.node import (
    NodeProcess,
    config_port,
    ledger_of,
    received,
    storescu,
    wait_for,
    write_images,
    write_node_config,
)
from tests.helpers.peers import storescp

VERIFICATION = "1.2.840.10008.1.1"


def _echo(port: int) -> float:
    """Seconds for one association, C-ECHO and release (pynetdicom, as a peer sees it)."""
    ae = AE("ECHOSCU")
    ae.add_requested_context(VERIFICATION)
    t0 = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title="CHEXDCM")
    assert assoc.is_established
    status = assoc.send_c_echo()
    assoc.release()
    took = time.perf_counter() - t0
    assert status.Status == 0
    return took


@pytest.mark.slow
def test_echo_is_prompt_while_two_workers_analyse_a_burst(tmp_path: Path) -> None:
    studies = 6
    with storescp(tmp_path / "dest", "PACS") as dest:
        cfg = write_node_config(
            tmp_path, dest=dest.address, work={"workers": 2, "max_studies": 1}, listen={"quiet_period": 0.3}
        )
        port = config_port(cfg)
        node = NodeProcess(cfg, port)
        try:
            files = [
                write_images(tmp_path / f"s{k}", [60 + k], study=f"1.2.826.0.1.3680043.8.498.7{k}")
                for k in range(studies)
            ]
            senders = [threading.Thread(target=storescu, args=(port, *f)) for f in files]
            for t in senders:
                t.start()
            for t in senders:
                t.join()
            spool = tmp_path / "spool"
            ledger = ledger_of(spool)
            echoes: list[float] = []
            busy = 0
            try:
                while len(ledger.deliveries("sent")) < studies:
                    analysing = [s for s in ledger.studies() if s["state"] == "analysing"]
                    busy += bool(analysing)
                    echoes.append(_echo(port))
                    time.sleep(0.05)
                    assert node.alive(), node.output()
                claimers = {s["claimed_by"] for s in ledger.studies()}
                versions = [s["version"] for s in ledger.studies()]
            finally:
                ledger.close()
            wait_for(lambda: len(received(dest)) >= 2 * studies, 60, "every SR and SC at the destination")
        finally:
            assert node.terminate() == 0, node.output()
        assert busy >= 1 and echoes, "the echoes did not overlap the analysis"
        assert max(echoes) < 1.0, sorted(echoes)[-5:]
        assert versions == [1] * studies  # each study analysed once
        assert claimers == {None}  # every claim released
        counts = received(dest)
        assert len(counts) == 2 * studies and set(counts.values()) == {1}  # each result delivered once
