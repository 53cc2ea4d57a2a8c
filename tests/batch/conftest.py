"""Fixtures of the batch tests: a model bundle and a generated export, one of each per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from chexnet_dicom.testing.export import Export, make_export
from tests.helpers.bundles import make_bundle


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model bundle made for the test module."""
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    """The synthetic export with every kind of file (a module may override it)."""
    return make_export(tmp_path_factory.mktemp("pacs") / "export")
