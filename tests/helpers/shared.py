"""Where the repository and the real test corpus (``../shared/data``) are, and external tools.

``CHEXDCM_REQUIRE_SHARED=1`` (set by ``.ci/run``) turns a missing corpus or a missing
external tool (dcmtk, dicom3tools, gdcm, PixelMed) into a failure instead of a skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

__all__ = ["CHEST_FILES", "REPO", "SHARED", "require_tool", "required", "shared_path"]

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("CHEXDCM_SHARED_DATA", REPO.parent / "shared" / "data"))
#: The real chest files of ``dicom/chest``, one per source (``siim_6904_fake_monochrome1.dcm``
#: is a twin of ``siim_6904.dcm`` and left out).
CHEST_FILES = (
    "966_fixed.dcm",
    "CR-MONO1-10-chest.dcm",
    "DX_J2K_0Padding.dcm",
    "RG1_J2KI.dcm",
    "nih_gcloud_no_finding.dcm",
    "siim_6904.dcm",
)


def required() -> bool:
    """Whether a missing corpus or tool must fail the test (CI) instead of skipping it."""
    return os.environ.get("CHEXDCM_REQUIRE_SHARED", "") == "1"


def shared_path(*parts: str) -> Path:
    """Return a path inside the shared corpus, skipping (or failing under CI) if absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        msg = f"shared test data not found at {path} (place ../shared/data beside the clone)"
        if required():
            pytest.fail(msg + "; CHEXDCM_REQUIRE_SHARED=1 requires it")
        pytest.skip(msg)
    return path


def require_tool(name: str) -> str:
    """Return the path of an external program, skipping (or failing under CI) if absent."""
    found = shutil.which(name)
    if found is None:
        msg = f"external tool {name!r} not installed (see .ci/run for the Debian packages)"
        if required():
            pytest.fail(msg + "; CHEXDCM_REQUIRE_SHARED=1 requires it")
        pytest.skip(msg)
    return found
