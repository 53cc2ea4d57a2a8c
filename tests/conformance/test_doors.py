"""The same result through every door: infer in-process and with workers, batch local and Ray, the node.

Every file of the conformance matrix (real NIH pictures in every encoding) and of the real
chest corpus goes through each door on the same backend and precision (ONNX Runtime,
float32, CPU).  Each door must analyse the same files (every one here is a frontal chest
the gate accepts), give the same probabilities within 1e-6, and write the same SR and SC
objects (UIDs exactly, values within the reference tolerances).  The default run sends a
subset (one case per family) through the three in-process doors; the whole matrix and the
Ray engine and the node are ``slow``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chexnet_dicom.testing.matrix import FAST, Matrix
from tests.helpers.doors import (
    ANALYSED,
    TWIN,
    DoorRun,
    chest_files,
    corpus,
    differences,
    run_batch,
    run_infer,
    run_node,
)
from tests.helpers.peers import free_port

#: The real chest file of the default run: no preamble, no file meta, implicit VR.
FAST_CHEST = ("CR-MONO1-10-chest.dcm",)


def _check(runs: list[DoorRun], folder: Path) -> None:
    reference = runs[0]
    names = sorted(p.name for p in folder.iterdir())
    problems = []
    for run in runs:
        missing = set(names) - set(run.outcome)
        if missing:
            problems.append(f"{run.door}: no outcome for {sorted(missing)}")
        not_analysed = {n: r for n, r in run.outcome.items() if r != ANALYSED}
        if not_analysed:
            problems.append(f"{run.door}: not analysed: {not_analysed}")
        if run.exit_code not in (None, 0):
            problems.append(f"{run.door}: exit status {run.exit_code}")
        if not run.objects:
            problems.append(f"{run.door}: wrote no DICOM results")
        problems += differences(reference, run)
    assert not problems, "\n".join(problems)


def test_a_case_of_each_family_gives_the_same_result_through_infer_and_batch(
    matrix: Matrix, card: Path, tmp_path: Path
) -> None:
    folder = corpus(matrix, tmp_path / "in", FAST, list(FAST_CHEST))
    runs = [
        run_infer(folder, tmp_path / "infer", card),
        run_infer(folder, tmp_path / "infer-w1", card, "--workers", "1", door="infer --workers 1"),
        run_batch(folder, tmp_path / "batch", card, "--workers", "2", door="batch --workers 2"),
    ]
    _check(runs, folder)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray = pytest.importorskip("ray", reason="the [ray] extra is not installed (pip install -e '.[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, dashboard_port=free_port(), log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _every_door(folder: Path, tmp: Path, card: Path) -> list[DoorRun]:
    """Each door's run; a door that raises becomes a run whose outcome names the exception."""
    doors: list[tuple[str, Callable[[], DoorRun]]] = [
        ("infer", lambda: run_infer(folder, tmp / "infer", card)),
        ("infer --workers 1", lambda: run_infer(folder, tmp / "w1", card, "--workers", "1", door="infer --workers 1")),
        ("batch --workers 2", lambda: run_batch(folder, tmp / "batch", card, "--workers", "2", door="batch --workers 2")),
        ("batch --engine ray", lambda: run_batch(folder, tmp / "ray", card, "--engine", "ray", door="batch --engine ray")),
        ("node", lambda: run_node(folder, tmp / "node", card)),
    ]  # fmt: skip
    runs = []
    for door, start in doors:
        try:
            runs.append(start())
        except Exception as exc:  # the other doors still run; the comparison names this one's failure
            crashed = f"door raised {type(exc).__name__}: {str(exc)[:200]}"
            runs.append(DoorRun(door, -1, dict.fromkeys((p.name for p in folder.iterdir()), crashed)))
    return runs


@pytest.mark.slow
@pytest.mark.network
def test_the_whole_matrix_gives_the_same_result_through_every_door(
    matrix: Matrix, card: Path, tmp_path: Path, local_ray: None
) -> None:
    chest = [p.name for p in chest_files() if p.name != TWIN]
    assert len(chest) == 6
    folder = corpus(matrix, tmp_path / "in", None, chest)
    _check(_every_door(folder, tmp_path / "all", card), folder)


@pytest.mark.slow
@pytest.mark.network
def test_the_chest_file_with_a_twin_gives_the_same_result_through_every_door(
    matrix: Matrix, card: Path, tmp_path: Path, local_ray: None
) -> None:
    folder = corpus(matrix, tmp_path / "in", (), [TWIN])
    assert [p.name for p in folder.iterdir()] == [TWIN]
    _check(_every_door(folder, tmp_path / "twin", card), folder)
