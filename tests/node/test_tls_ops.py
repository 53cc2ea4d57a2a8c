"""Mutual TLS with certificates made here; the Prometheus endpoint; SIGTERM; status and dead-letters commands."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from chexnet_dicom.net.tls import server_context
from chexnet_dicom.node.ledger import NodeLedger
from chexnet_dicom.node.metrics import start_metrics
from chexnet_dicom.node.scp import start_scp
from chexnet_dicom.node.spool import Spool
from chexnet_dicom.testing import synth
from tests.helpers.node import OWN, dcmtk, node_config, storescu
from tests.helpers.shared import require_tool

pytestmark = pytest.mark.network


def _openssl(*args: str | Path) -> None:
    subprocess.run([require_tool("openssl"), *map(str, args)], check=True, capture_output=True, timeout=60)


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    folder.mkdir(parents=True, exist_ok=True)
    p = {n: folder / n for n in ("ca.key", "ca.pem", "srv.key", "srv.pem", "cli.key", "cli.pem")}
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        p["ca.key"],
        "-out",
        p["ca.pem"],
        "-days",
        "2",
        "-subj",
        "/CN=chexdcm test CA",
    )
    ext = folder / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for who in ("srv", "cli"):
        csr = folder / f"{who}.csr"
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            p[f"{who}.key"],
            "-out",
            csr,
            "-subj",
            f"/CN={who}",
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            p["ca.pem"],
            "-CAkey",
            p["ca.key"],
            "-CAcreateserial",
            "-out",
            p[f"{who}.pem"],
            "-days",
            "2",
            "-extfile",
            ext,
        )
    return p


def test_mutual_tls_accepts_a_client_certificate_and_refuses_none(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    config = node_config(tmp_path, **{"listen.acse_timeout": 3.0})
    spool = Spool(config.spool)
    ledger = NodeLedger(spool.ledger_path)
    ctx = server_context(pki["srv.pem"], pki["srv.key"], pki["ca.pem"], require_client_cert=True)
    running = start_scp(config, spool, ledger, OWN, tls=ctx)
    try:
        ds = synth.make_dataset(synth.chest_phantom((96, 80), seed=2), seed=2)
        synth.write(ds, tmp_path / "a.dcm")
        mutual = ("+tls", str(pki["cli.key"]), str(pki["cli.pem"]), "+cf", str(pki["ca.pem"]))
        ok = storescu(running.port, tmp_path / "a.dcm", extra=mutual)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert len(ledger.instances()) == 1
        anonymous = storescu(running.port, tmp_path / "a.dcm", extra=("+tla", "+cf", str(pki["ca.pem"])))
        assert anonymous.returncode != 0
        plain = dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "CHEXDCM", "127.0.0.1", str(running.port))
        assert plain.returncode != 0
        assert len(ledger.instances()) == 1
        again = dcmtk(
            "echoscu", "-aet", "ECHOSCU", "-aec", "CHEXDCM", *mutual, "127.0.0.1", str(running.port)
        )
        assert again.returncode == 0, again.stderr
    finally:
        running.stop(grace=2)
        ledger.close()


def test_metrics_endpoint_on_loopback(tmp_path: Path) -> None:
    spool = Spool(node_config(tmp_path).spool)
    ledger = NodeLedger(spool.ledger_path)
    ledger.count("studies_analysed", 3)
    ledger.count("dead_letters")
    server = start_metrics(0, spool.ledger_path)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as rsp:
            text = rsp.read().decode()
        assert "chexdcm_studies_analysed_total 3.0" in text
        assert "chexdcm_dead_letters_total 1.0" in text
        assert "chexdcm_turnaround_seconds_bucket" in text
        assert server._server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        ledger.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chexnet_dicom", *args], capture_output=True, text=True, timeout=120
    )


def test_status_and_dead_letters_commands(tmp_path: Path) -> None:
    spool = Spool(node_config(tmp_path).spool)
    ledger = NodeLedger(spool.ledger_path)
    ledger.note("guard", "an association was cut off: pdu-too-long")
    ledger.close()
    out = _cli("status", "--spool", str(spool.root), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["queue"] == {"studies_waiting": 0, "deliveries_waiting": 0}
    assert summary["last_events"][0]["kind"] == "guard"
    listed = _cli("dead-letters", "list", "--spool", str(spool.root))
    assert listed.returncode == 0 and "0 dead letter(s)" in listed.stdout
    missing = _cli("status", "--spool", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no node ledger" in missing.stderr


def test_config_check(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    assert _cli("config", "check", str(repo / "pipelines" / "node.toml")).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[listen]\nbind = "0.0.0.0"\nmax_pdu = 10\n[access]\nopen = true\n')
    res = _cli("config", "check", str(bad))
    assert res.returncode == 2 and "listen.max_pdu" in res.stderr
    closed = tmp_path / "closed.toml"
    closed.write_text("[listen]\nport = 11112\n")
    res = _cli("config", "check", str(closed))
    assert res.returncode == 2 and "access.allow" in res.stderr


def test_dead_letters_resend_and_purge_from_the_command_line(tmp_path: Path) -> None:
    spool = Spool(node_config(tmp_path).spool)
    ledger = NodeLedger(spool.ledger_path)
    ids = []
    for k in range(2):
        folder = spool.results / f"r{k}"
        folder.mkdir(parents=True)
        (folder / "sr.dcm").write_bytes(b"x")
        with ledger._store.transaction() as db:  # a dead letter, as the sender leaves one
            db.execute(
                "INSERT INTO deliveries (study_uid, version, destination, state, attempts, next_at, last_error, "
                "folder, last_ack, created) VALUES (?, 1, 'PACS@127.0.0.1:4242', 'dead', 5, 0, 'refused', ?, 0, 0)",
                (f"1.2.3.{k}", f"results/r{k}"),
            )
            ids.append(db.execute("SELECT MAX(id) FROM deliveries").fetchone()[0])
    ledger.close()
    listed = _cli("dead-letters", "list", "--spool", str(spool.root), "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == ids
    assert (
        "1 dead letter(s) queued again"
        in _cli("dead-letters", "resend", str(ids[0]), "--spool", str(spool.root)).stdout
    )
    assert "1 dead letter(s) purged" in _cli("dead-letters", "purge", "--spool", str(spool.root)).stdout
    assert not (spool.results / "r1").exists() and (spool.results / "r0").exists()
    ledger = NodeLedger(spool.ledger_path)
    try:
        assert [d["state"] for d in ledger.deliveries()] == ["pending"]
    finally:
        ledger.close()
