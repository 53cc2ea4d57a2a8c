"""Shared pytest fixtures: the real test corpus in ``../shared/data`` and external tools.

``CHEXDCM_REQUIRE_SHARED=1`` (set by ``.ci/run``) turns a missing corpus or a missing
external tool (dcmtk, dicom3tools, gdcm) into a failure instead of a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP workers must sleep, not spin (before anything imports torch): spinning
# workers on a small shared machine made forward passes 10-100x slower at random.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from tests.helpers.shared import REPO, SHARED, require_tool, shared_path

__all__ = ["REPO", "SHARED", "require_tool", "shared_path"]


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the tests' downloads and ONNX exports out of the user's ~/.cache (one per run)."""
    os.environ["CHEXDCM_CACHE"] = str(tmp_path_factory.mktemp("chexdcm-cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The root of ``../shared/data``."""
    return shared_path()


@pytest.fixture(scope="session")
def shared_dicom() -> Path:
    """``../shared/data/dicom``."""
    return shared_path("dicom")


@pytest.fixture(scope="session")
def nih_dir() -> Path:
    """``../shared/data/nih``."""
    return shared_path("nih")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/data/reference``."""
    return shared_path("reference")
