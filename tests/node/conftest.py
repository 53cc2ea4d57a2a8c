"""Fixtures of the listener node tests (shared code lives in tests/helpers/node.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.node import Listener, start_listener


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lis = start_listener(tmp_path)
    try:
        yield lis
    finally:
        lis.running.stop(grace=2)
        lis.ledger.close()
