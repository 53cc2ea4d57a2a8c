"""``--engine ray`` on a local Ray instance with 2 CPUs: a predictor actor pool, the local engine's results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chexnet_dicom.batch.ray_engine import PREDICTOR_ACTOR
from chexnet_dicom.errors import EXIT_INCOMPLETE
from chexnet_dicom.testing.export import Export, make_export
from tests.helpers.batch import assert_same_tables, run_batch_cli
from tests.helpers.bundles import make_bundle
from tests.helpers.peers import free_port

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed (pip install -e '.[ray]')")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    # the dashboard serves the state API (ray[default]); on this host only, an ephemeral port
    ray.init(
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=free_port(),
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_engine_runs_an_actor_pool_and_equals_the_local_engine(local_ray: None, tmp_path: Path) -> None:
    from ray.util.state import list_actors

    export: Export = make_export(tmp_path / "export")
    card = make_bundle(tmp_path / "bundle")
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert run_batch_cli(export.root, local, card) == EXIT_INCOMPLETE
    before = {a.actor_id for a in list_actors(limit=1000)}
    assert run_batch_cli(export.root, remote, card, "--engine", "ray") == EXIT_INCOMPLETE
    actors = [a for a in list_actors(limit=1000) if a.actor_id not in before]
    pool = [a for a in actors if PREDICTOR_ACTOR in (a.class_name or "")]
    assert pool, [a.class_name for a in actors]  # the predictor ran as Ray actors
    assert_same_tables(remote, local, tol=1e-6)
