"""Fixtures of the conformance tests: the matrix written once per session, a small bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from chexnet_dicom.testing.matrix import Matrix, write_matrix
from tests.helpers.bundles import make_bundle
from tests.helpers.shared import shared_path


@pytest.fixture(scope="session")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    """Every case of the matrix (no chest files)."""
    return write_matrix(shared_path("nih"), tmp_path_factory.mktemp("matrix"))


@pytest.fixture(scope="session")
def card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"))
