"""Dedup's per-cluster search as Ray tasks on a real 2-node loopback cluster gives the local groups.

The cluster is pinned to 127.0.0.1 and checked to listen on loopback only before any work is sent;
the driver runs in a child process (this pytest process stays Ray-free) and compares, on the same
embeddings, the local search with the Ray one: ``find_groups`` with ``ray_block_map``, and the
registered ``dedup`` stage with ``engine: ray`` writing ``clip_dedup`` next to a local run's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from loopback_cluster import REPO, two_node_ray

pytestmark = pytest.mark.cluster

DRIVER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import numpy as np
    import pyarrow as pa
    import ray

    from egocurate.catalog import tables
    from egocurate.catalog.store import Catalog
    from egocurate.filters.dedup import ArraySource, DedupSettings, find_groups
    from egocurate.filters.vectors import encode_vectors
    from egocurate.jobs.corpus.dedup import DedupCorpusStage, ray_block_map

    address, root = sys.argv[1], Path(sys.argv[2])
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(150, 32))
    base = centers[rng.integers(0, 150, 3000)] + rng.normal(size=(3000, 32)) * 0.6 / np.sqrt(32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    source = rng.integers(0, 3000, 1200)
    copies = base[source] + rng.normal(size=(1200, 32)) * rng.uniform(0.1, 0.4, (1200, 1)) / np.sqrt(32)
    vectors = np.concatenate([base, copies]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = pa.array([f"c{i:06d}" for i in range(len(vectors))])
    settings = DedupSettings(eps=0.05, exact_max=0, cluster_size=64, group_rows=600)

    def run(block_map=None):
        pairs = []
        kwargs = {} if block_map is None else {"block_map": block_map}
        groups = find_groups(ArraySource(ids, vectors.astype(np.float16), chunk_rows=1000), settings,
                             pair_sink=lambda a, b, s: pairs.append(len(a)), progress=False, **kwargs)
        return groups, sum(pairs)

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    local, local_pairs = run()
    blocks = []
    block_map = ray_block_map(in_flight=2)

    def counted(fn, items):
        for result in block_map(fn, items):
            blocks.append(1)
            yield result

    remote, remote_pairs = run(counted)
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    ray.shutdown()

    def write(path):
        catalog = Catalog(path)
        table = pa.table({"clip_id": ids, "video_id": ids, "model_id": pa.array(["m"] * len(ids)),
                          "dim": pa.array(np.full(len(ids), 32, np.int32)),
                          "vector": encode_vectors(vectors)})
        catalog.append(tables.CLIP_EMBEDDINGS, table, operation="test")
        return catalog

    params = {"eps": 0.05, "exact_max": 0, "cluster_size": 64}
    tables_out = {}
    for engine in ("local", "ray"):
        catalog = write(root / engine)
        stage = DedupCorpusStage(engine=engine, ray_address=address if engine == "ray" else None, **params)
        summary = stage.run_corpus(catalog, progress=False)
        rows = catalog.read(tables.CLIP_DEDUP.name).sort_by("clip_id")
        tables_out[engine] = rows.drop_columns(["nearest_similarity"]).to_pylist()
        tables_out[engine + "_sims"] = rows.column("nearest_similarity").to_numpy(zero_copy_only=False)
        tables_out[engine + "_engine"] = summary.engine
    # Similarities may differ in the last bits: BLAS sums in another order in another process.
    sims_close = bool(np.allclose(tables_out["local_sims"], tables_out["ray_sims"], atol=1e-5,
                                  equal_nan=True))
    print(json.dumps({
        "labels_equal": bool(np.array_equal(local.labels, remote.labels)),
        "nearest_equal": bool(np.array_equal(local.nearest_index, remote.nearest_index)),
        "similarity_close": bool(np.allclose(local.nearest_similarity, remote.nearest_similarity,
                                             atol=1e-5, equal_nan=True)),
        "groups": int(len(np.unique(local.labels))), "rows": int(len(local.labels)),
        "pairs": [local_pairs, remote_pairs], "blocks": len(blocks), "nodes": len(nodes),
        "stage_rows_equal": tables_out["local"] == tables_out["ray"],
        "stage_rows": len(tables_out["ray"]), "stage_sims_close": sims_close,
        "stage_engines": [tables_out["local_engine"], tables_out["ray_engine"]],
    }))
    """
)


@pytest.fixture(scope="module")
def cluster():
    """Head and one worker node, one CPU each; everything stopped by PID at the end."""
    with two_node_ray() as ray:
        yield ray


def test_ray_search_gives_the_local_groups(cluster, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, cluster.address, str(tmp_path)],
        env=cluster.driver_env(PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["nodes"] == 2
    assert result["blocks"] > 4  # the search really was split into several Ray tasks
    assert result["groups"] < result["rows"] - 500  # near copies did group
    assert result["labels_equal"] and result["nearest_equal"] and result["similarity_close"], result
    assert result["pairs"][0] == result["pairs"][1] > 0
    assert result["stage_engines"] == ["global", "ray"]
    assert result["stage_rows"] == 4200 and result["stage_rows_equal"] and result["stage_sims_close"], result
    cluster.check_loopback()  # still only on loopback after the work (raises otherwise)
