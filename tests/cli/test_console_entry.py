"""The installed entry point keeps exit codes and output when it skips interpreter teardown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from chexnet_dicom import __version__


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chexnet_dicom", *args], capture_output=True, text=True, timeout=120
    )


def test_version_and_exit_codes_through_console_main(tmp_path: Path) -> None:
    ok = _run("--version")
    assert ok.returncode == 0 and __version__ in ok.stdout
    missing = _run("check", str(tmp_path / "nothing-here"))
    assert missing.returncode == 1
    usage = _run("check", "--no-such-option")
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_output_is_flushed_before_the_fast_exit(tmp_path: Path) -> None:
    files = [tmp_path / f"f{i}.txt" for i in range(200)]
    for f in files:
        f.write_text("not dicom")
    res = _run("check", "--json", "--no-decode", str(tmp_path))
    assert res.stdout.count("\n") == 200
