"""Losing a node under CPU-side decode: a 2-node loopback Ray cluster (1 CPU each) loses its worker
node (every process SIGKILLed) while shots run, before the fused quality+embed stage places any
actor; the run re-plans on the one CPU left and finishes with every row once.

Before the re-plan, quality+embed could stall on the head (its one actor holding the only CPU, its
decode waiting as a Ray task for a CPU that went with the dead node) and end with ``no batch
finished``. Every service binds to 127.0.0.1 (checked before any work is sent); every process is
stopped by PID. The driver is the real CLI in a child process (this pytest process stays Ray-free).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from loopback_cluster import CLUSTER_STAGES, cli, finish, two_node_ray, write_pipeline

from egocurate.catalog.store import Catalog
from egocurate.jobs.config import PipelineConfig
from egocurate.jobs.pipeline import run_pipeline

pytestmark = pytest.mark.cluster

STAGES = [
    *CLUSTER_STAGES,
    {"name": "quality", "params": {"batch_size": 1}},
    {"name": "embed", "params": {"model": "egocurate-tiny-clip", "pretrained": None, "batch_size": 1}},
]
TABLES = {"clips": "clip_id", "clip_quality": "clip_id", "clip_embeddings": "clip_id"}


@pytest.fixture
def cluster():
    """Head and one worker node, one CPU each, on loopback; everything stopped by PID at the end."""
    # The dead node stays counted as alive for ~15 s (Ray's own default is longer still), so the
    # next stage plans while the cluster still looks like two nodes: the moment of the stall.
    with two_node_ray(RAY_health_check_failure_threshold="15") as ray:
        yield ray


@pytest.fixture(scope="module")
def reference(cluster_sources, tmp_path_factory) -> Path:
    """The same pipeline run locally: what the cluster run must equal."""
    catalog = tmp_path_factory.mktemp("node_loss_local") / "catalog"
    pipeline = write_pipeline(catalog.parent / "local.yaml", catalog, cluster_sources, STAGES)
    run_pipeline(PipelineConfig(**yaml.safe_load(pipeline.read_text())))
    return catalog


def _keys(catalog: Path, table: str) -> list[str]:
    return Catalog(catalog).read(table, columns=[TABLES[table]]).column(0).to_pylist()


def _commits(catalog: Path, table: str) -> int:
    log = catalog / table / "_delta_log"
    return max(len(list(log.glob("*.json"))) - 1, 0) if log.is_dir() else 0


def test_losing_the_worker_node_while_shots_run_finishes_every_row_once(
    cluster, cluster_sources, reference, tmp_path
):
    import time

    catalog = tmp_path / "ray"
    pipeline = write_pipeline(tmp_path / "r.yaml", catalog, cluster_sources, STAGES)
    args = ("run", str(pipeline), "--engine", "ray", "--ray-address", cluster.address)
    proc = cli(cluster.driver_env(EGOCURATE_PROGRESS_TIMEOUT="120"), *args)
    videos = len(list(cluster_sources.iterdir()))
    end = time.time() + 240
    # The kill lands as shots commits its last batch (one commit per video), so quality+embed plans
    # right after it, while the dead node is still counted.
    while _commits(catalog, "clips") < videos and proc.poll() is None and time.time() < end:
        time.sleep(0.05)
    cluster.kill_node("worker")  # SIGKILL every process of the worker node: raylet, workers, agents
    assert proc.poll() is None, "the run ended before the kill"
    assert _commits(catalog, "clip_quality") == 0, "quality+embed finished a batch before the kill"
    code, out, err = finish(proc, timeout=420)
    assert code == 0, out[-2000:] + err[-3000:]  # no rerun: the run itself re-plans and finishes
    for table in TABLES:
        keys = _keys(catalog, table)
        doubled = [k for k, n in Counter(keys).items() if n > 1]
        assert not doubled, f"{table}: rows committed twice: {doubled}"
        assert sorted(keys) == sorted(_keys(reference, table)), f"{table}: rows lost or added"
    ledger = Catalog(catalog).read("_ledger", columns=["stage", "key"]).to_pylist()
    assert not [k for k, n in Counter((r["stage"], r["key"]) for r in ledger).items() if n > 1]
    quality = Catalog(catalog).read("clip_quality").sort_by("clip_id").to_pylist()
    expected = Catalog(reference).read("clip_quality").sort_by("clip_id").to_pylist()
    for got, want in zip(quality, expected, strict=True):
        for column, value in want.items():
            if isinstance(value, float):
                assert got[column] == pytest.approx(value, rel=1e-6, abs=1e-9), (column, got, want)
