"""``chexdcm listen`` as a separate process, for the fault, signal and hostile-peer tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.helpers.peers import free_port, wait_for_port

__all__ = ["NodeProcess", "write_node_config"]


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

    def __init__(self, config: Path, port: int, *, fault: str = "", log: Path | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k != "CHEXDCM_FAULT"}
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        if fault:
            env["CHEXDCM_FAULT"] = fault
        self.port = port
        self.log = log or config.with_name(f"node-{int(time.time() * 1000)}.log")
        self._fh = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chexnet_dicom", "listen", "--config", str(config)],
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
