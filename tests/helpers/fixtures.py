"""Module-scoped fixtures several test modules share: a small model bundle and a two-image study.

A test module takes them by name (``card = fixtures.card``); each module gets its own
copy, written once for the module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.bundles import make_bundle
from tests.helpers.studies import write_study

__all__ = ["card", "study"]


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model card of a small bundle (:func:`~tests.helpers.bundles.make_bundle`)."""
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the two-image study of :func:`~tests.helpers.studies.write_study`."""
    folder = tmp_path_factory.mktemp("study") / "in"
    write_study(folder)
    return folder
