"""The cycle collector policy: paused while long-lived objects are built, then frozen out of collections."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chexnet_dicom.gc_policy import import_long_lived, long_lived
from tests.helpers import fixtures

card = fixtures.card
study = fixtures.study


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()  # what a test froze goes back to the oldest generation
    if enabled:
        gc.enable()


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_the_block_runs_with_the_collector_off_and_freezes_what_it_built() -> None:
    before = gc.get_freeze_count()
    with long_lived():
        assert not gc.isenabled()
        kept = [_Node() for _ in range(1000)]  # tracked objects, alive after the block
    assert gc.isenabled()
    assert gc.get_freeze_count() >= before + len(kept)
    assert all(gc.is_tracked(k) for k in kept)


def test_the_collector_comes_back_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), long_lived():
        raise RuntimeError("start-up failed")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with long_lived():
        pass
    assert not gc.isenabled()


def test_collect_true_frees_the_blocks_cyclic_garbage_before_the_freeze() -> None:
    with long_lived(collect=True):
        dead = _cycle()  # unreachable at once; only a collection frees a cycle
    assert dead() is None
    with long_lived():
        frozen = _cycle()
    gc.collect()
    assert frozen() is not None, "without collect=True the cycle is frozen: the documented cost"


def test_collect_may_be_decided_when_the_block_ends() -> None:
    loaded: list[str] = []
    with long_lived(collect=lambda: "heavy" in loaded):
        dead = _cycle()
        loaded.append("heavy")  # e.g. the block imported torch, which leaves cyclic garbage
    assert dead() is None
    with long_lived(collect=lambda: False):
        kept = _cycle()
    assert kept() is not None


def test_import_long_lived_imports_once_and_then_leaves_the_collector_alone() -> None:
    name = "chexnet_dicom.gc_policy"
    assert import_long_lived(name) is sys.modules[name]
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    import_long_lived(name)  # already imported: no pause, no freeze
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    sys.modules.pop("json.tool", None)
    module = import_long_lived("json.tool")
    assert module.__name__ == "json.tool" and gc.get_freeze_count() > 0


_COUNT_FULL_COLLECTIONS = """
import gc, json, sys
full = []
def count(what, info):
    if what == "start" and info["generation"] == 2:
        full.append("write" if "chexnet_dicom.outputs" in sys.modules else "before the write step")
gc.callbacks.append(count)
from chexnet_dicom.cli import main
rc = main(sys.argv[1:])
from pydicom.sr import _concepts_dict
tables = _concepts_dict.concepts  # pydicom's SR code dictionary, imported by the write step
print(json.dumps({
    "rc": rc,
    "full": full,
    "imported": "chexnet_dicom.outputs" in sys.modules,
    "frozen": gc.get_freeze_count(),
    "tables_walked": any(o is tables for o in gc.get_objects()),
}))
"""


def _infer_counting_full_collections(card: Path, study: Path, out: Path, cache: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _COUNT_FULL_COLLECTIONS,
            "infer",
            str(study),
            "--weights",
            str(card),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CHEXDCM_CACHE": str(cache)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["rc"] == 0 and got["imported"], got
    return got


def test_a_warm_infer_run_makes_no_full_collection(card: Path, study: Path, tmp_path: Path) -> None:
    """A fresh ``infer`` process: start-up and the write step's output-stack import are frozen.

    Without the policy a warm run of the demo study made a full collection in start-up and
    one in the write step's import of the output stack, each a walk of about 190,000 objects.
    The first (cold) run exports the ONNX graph with torch loaded, and so collects once,
    on purpose, before its freeze: torch leaves cyclic garbage behind.
    """
    cold = _infer_counting_full_collections(card, study, tmp_path / "cold", tmp_path / "cache")
    assert cold["full"] == ["before the write step"], cold
    warm = _infer_counting_full_collections(card, study, tmp_path / "warm", tmp_path / "cache")
    # none in start-up; the study's own build may still trigger one, which walks only what
    # is not frozen: the imported tables are not among it
    assert "before the write step" not in warm["full"], warm
    assert warm["frozen"] > 100_000 and not warm["tables_walked"], warm
