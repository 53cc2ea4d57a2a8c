"""Shared code of the listener node tests: an SCP on an ephemeral loopback port, dcmtk peers, a node process."""

from __future__ import annotations

import collections
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tomllib
from pydicom import dcmread

from chexnet_dicom.config import NodeConfig, load_node_config
from chexnet_dicom.node.ledger import NewInstance, NodeLedger
from chexnet_dicom.node.scp import OwnOutputs, RunningSCP, start_scp
from chexnet_dicom.node.spool import Spool
from chexnet_dicom.testing import synth
from tests.helpers.peers import StoreSCP, free_port, wait_for_port
from tests.helpers.shared import require_tool

#: Weights hash and device UID the receive tests' SCP treats as its own.
OWN = OwnOutputs("0" * 64, "1.2.826.0.1.3680043.10.1999.1")


def node_config(tmp_path: Path, **overrides: Any) -> NodeConfig:
    """A node configuration on ``tmp_path/spool``, port 0, allowing STORESCU and ECHOSCU."""
    values: dict[str, Any] = {
        "listen.port": 0,
        "listen.quiet_period": 0.5,
        "access.allow": ["STORESCU", "ECHOSCU", "DCMSEND"],
        "spool.dir": str(tmp_path / "spool"),
        "spool.min_free_bytes": 1024 * 1024,
    }
    values.update(overrides)
    return load_node_config(None, values)


@dataclasses.dataclass
class Listener:
    """An SCP under test."""

    config: NodeConfig
    spool: Spool
    ledger: NodeLedger
    running: RunningSCP

    @property
    def port(self) -> int:
        return self.running.port

    def parts(self) -> list[Path]:
        return sorted(self.spool.root.rglob("*.part"))

    def stored(self) -> list[Path]:
        return sorted(self.spool.store.rglob("*.dcm"))


def start_listener(tmp_path: Path, **overrides: Any) -> Listener:
    config = node_config(tmp_path, **overrides)
    spool = Spool(config.spool)
    ledger = NodeLedger(spool.ledger_path)
    return Listener(config, spool, ledger, start_scp(config, spool, ledger, OWN))


def dcmtk(tool: str, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool (TCP_NODELAY on), returning its completed process."""
    exe = require_tool(tool)
    env = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [exe, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def storescu(
    port: int, *files: Path, aet: str = "STORESCU", called: str = "CHEXDCM", extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return dcmtk("storescu", "-aet", aet, "-aec", called, *extra, "127.0.0.1", str(port), *files)


def dcmsend(
    port: int, *files: Path, aet: str = "DCMSEND", called: str = "CHEXDCM", extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return dcmtk("dcmsend", "-aet", aet, "-aec", called, *extra, "127.0.0.1", str(port), *files)


def wait_for(predicate: Any, timeout: float = 120.0, what: str = "condition") -> Any:
    """Poll ``predicate()`` until it returns something true; fail after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def write_node_config(tmp_path: Path, *, dest: str = "", **tables: dict[str, Any]) -> Path:
    """A node TOML file on ``tmp_path/spool`` with a fresh port; ``tables`` add or replace keys."""
    doc: dict[str, dict[str, Any]] = {
        "listen": {"port": free_port(), "quiet_period": 0.5},
        "access": {"allow": ["STORESCU", "ECHOSCU", "DCMSEND"]},
        "spool": {"dir": str(tmp_path / "spool"), "min_free_bytes": 1024 * 1024},
        "destination": {"url": dest, "attempts": 20, "backoff_s": 0.5, "backoff_cap_s": 2.0},
    }
    for name, values in tables.items():
        doc.setdefault(name, {}).update(values)
    lines = []
    for name, values in doc.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, (int, float)):
                lines.append(f"{key} = {value}")
            elif isinstance(value, list):
                lines.append(f"{key} = [{', '.join(repr(str(v)).replace(chr(39), chr(34)) for v in value)}]")
            else:
                lines.append(f'{key} = "{value}"')
    path = tmp_path / "node.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class NodeProcess:
    """A ``chexdcm listen --config FILE`` process (optionally with a fault point armed)."""

    def __init__(
        self, config: Path, port: int, *, fault: str = "", log: Path | None = None, verbose: int = 0
    ) -> None:
        env = {k: v for k, v in os.environ.items() if k != "CHEXDCM_FAULT"}
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        if fault:
            env["CHEXDCM_FAULT"] = fault
        self.port = port
        self.log = log or config.with_name(f"node-{int(time.time() * 1000)}.log")
        self._fh = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chexnet_dicom",
                *(["-" + "v" * verbose] if verbose else []),
                "listen",
                "--config",
                str(config),
            ],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            wait_for_port(port, self.proc, timeout=180)
        except BaseException:
            self.kill()
            raise

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_dead(self, timeout: float = 60) -> int:
        """Wait for the process to end (a fault point killed it); returns its code."""
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """``kill -9`` of the node (its worker dies with it)."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._fh.close()

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM: a graceful stop; returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def received(dest: StoreSCP) -> collections.Counter[str]:
    """SOP Instance UID -> how many times the destination received it."""
    return collections.Counter(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in dest.files())


def all_sent(spool: Path, studies: int = 1) -> bool:
    """Whether the ledger of ``spool`` has every delivery sent (for ``studies`` studies at least)."""
    led = NodeLedger(spool / "ledger.sqlite")
    try:
        sent = led.deliveries("sent")
        waiting = led.deliveries("pending") or led.deliveries("sending")
        return len({d["study_uid"] for d in sent}) >= studies and not waiting
    finally:
        led.close()


def config_port(cfg: Path) -> int:
    """The listen port of a node TOML file."""
    return int(tomllib.loads(cfg.read_text())["listen"]["port"])


def ledger_of(spool: Path) -> NodeLedger:
    """A ledger connection to ``spool`` (close it)."""
    return NodeLedger(spool / "ledger.sqlite")


NODE_STUDY = "1.2.826.0.1.3680043.8.498.91"


def write_images(
    folder: Path, seeds: list[int], study: str = NODE_STUDY, first: int = 1, **kw: Any
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, seed in enumerate(seeds, first):
        ds = synth.make_dataset(
            synth.chest_phantom((160, 144), seed=seed),
            seed=seed,
            study_uid=study,
            instance_number=k,
            patient_id="NODE-TEST",
            **kw,
        )
        path = folder / f"img{seed}.dcm"
        synth.write(ds, path)
        out.append(path)
    return out


def analysed(ledger: NodeLedger, study: str, version: int = 1) -> Any:
    row = ledger.study(study)
    if row and (row["state"] == "failed" or (row["state"] == "analysed" and row["version"] >= version)):
        return row
    return None


def record_ready_studies(spool: Spool, ledger: NodeLedger, seeds: list[int]) -> None:
    """One single-image study per seed, written to the spool, recorded and made ready (no listener)."""
    from tests.helpers.studies import write_single_image_study

    for seed in seeds:
        path = write_single_image_study(spool.store / f"{seed}.dcm", seed)
        ds = dcmread(path, stop_before_pixels=True)
        ledger.record_instance(
            NewInstance(
                file_id=f"file-{seed}",
                path=spool.relative(path),
                sop_uid=ds.SOPInstanceUID,
                study_uid=ds.StudyInstanceUID,
                series_uid=ds.SeriesInstanceUID,
                sop_class_uid=ds.SOPClassUID,
                sha256=f"{seed:064x}",
                size=path.stat().st_size,
                kind="image",
                reason=None,
                calling_ae="TEST",
            )
        )
    ledger.promote_ready(time.time() + 60, 0.0, 0.0, set())
