"""The one fault registry: one variable, the n-th hit of a named point, a typo refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from chexnet_dicom import faults


def test_only_the_nth_hit_of_the_named_point_is_active(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "_hits", {})
    monkeypatch.setenv(faults.ENV, "receive.enospc:3")
    hits = [faults.active("receive.enospc") for _ in range(5)]
    assert hits == [False, False, True, False, False]
    assert not faults.active("worker.model_error")  # another point is never active
    monkeypatch.delenv(faults.ENV)
    assert not faults.active("receive.enospc")


def test_an_unknown_point_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown fault point"):
        faults.active("batch.nowhere")


@pytest.mark.parametrize(("wanted", "killed_at"), [("batch.commit:2", 2), ("batch.commit", 1), ("", None)])
def test_fault_kills_the_process_at_the_nth_hit(wanted: str, killed_at: int | None) -> None:
    code = (
        "from chexnet_dicom.faults import fault\n"
        "for i in range(1, 4):\n"
        "    print(i, flush=True)\n"
        "    fault('batch.commit')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (faults.ENV, faults.MAIN_PID_ENV)}
    env[faults.ENV] = wanted
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    printed = proc.stdout.split()
    if killed_at is None:
        assert proc.returncode == 0 and printed == ["1", "2", "3"]
    else:
        assert proc.returncode == -9 and printed == [str(i) for i in range(1, killed_at + 1)]
