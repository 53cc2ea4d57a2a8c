"""CI must fail, not skip, when the shared corpus is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def test_missing_shared_data_fails_when_required(tmp_path: Path) -> None:
    test_file = tmp_path / "test_probe.py"
    test_file.write_text(
        textwrap.dedent(
            """
            def test_probe(shared_data):
                assert shared_data.exists()
            """
        )
    )
    conftest = Path(__file__).resolve().parents[1] / "conftest.py"
    (tmp_path / "conftest.py").write_text(conftest.read_text())
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, CHEXDCM_SHARED_DATA=str(tmp_path / "nowhere"), PYTHONPATH=str(repo))
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)]
    env["CHEXDCM_REQUIRE_SHARED"] = "1"
    strict = subprocess.run(base, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert strict.returncode == 1, strict.stdout
    assert "CHEXDCM_REQUIRE_SHARED=1 requires it" in strict.stdout
    env["CHEXDCM_REQUIRE_SHARED"] = "0"
    lax = subprocess.run([*base, "-rs"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert lax.returncode == 0, lax.stdout
    assert "1 skipped" in lax.stdout
