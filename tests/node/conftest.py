"""Fixtures of the listener node tests: a guarded SCP on an ephemeral loopback port, real dcmtk peers."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chexnet_dicom.config import NodeConfig, load_node_config
from chexnet_dicom.node.ledger import Ledger
from chexnet_dicom.node.scp import OwnOutputs, RunningSCP, start_scp
from chexnet_dicom.node.spool import Spool
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
    ledger: Ledger
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
    ledger = Ledger(spool.ledger_path)
    return Listener(config, spool, ledger, start_scp(config, spool, ledger, OWN))


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lis = start_listener(tmp_path)
    try:
        yield lis
    finally:
        lis.running.stop(grace=2)
        lis.ledger.close()


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
    port: int, *files: Path, aet: str = "DCMSEND", called: str = "CHEXDCM"
) -> subprocess.CompletedProcess[str]:
    return dcmtk("dcmsend", "-aet", aet, "-aec", called, "127.0.0.1", str(port), *files)


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
