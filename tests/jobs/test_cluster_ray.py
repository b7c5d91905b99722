"""A real 2-node Ray cluster on loopback (``ray start``): a pipeline across both nodes, the worker
node's raylet SIGKILLed mid-stage, and then the one-CPU cluster that is left.

Every service is pinned to 127.0.0.1 and checked (psutil) to listen on loopback only before any
work is sent; every process is stopped by PID in the fixture's finalizer, even when a test fails.
The driver runs as the real CLI in a child process (this pytest process stays Ray-free).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from loopback_cluster import (
    REPO,
    RayLoopbackCluster,
    cli,
    finish,
    free_port,
    table_rows,
    two_node_ray,
    wait_for_commits,
    write_pipeline,
)

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster():
    """Head and one worker node, one CPU each; everything stopped by PID at the end."""
    with two_node_ray() as ray:
        yield ray


def _cli(cluster: RayLoopbackCluster, *args: str, **env: str) -> subprocess.Popen:
    return cli(cluster.driver_env(**env), *args)


def _actor_nodes(cluster: RayLoopbackCluster) -> dict[str, list[str]]:
    """Node ids of every _StageActor the cluster ran (the GCS keeps dead actors' records)."""
    code = (
        "import json, ray\n"
        f"ray.init(address='{cluster.address}', logging_level='ERROR', log_to_driver=False)\n"
        "from ray._private import state\n"
        "nodes = sorted({a['Address']['NodeID'] for a in state.actors().values()\n"
        "                if a.get('ActorClassName', '').endswith('_StageActor')})\n"
        "alive = sorted(n['NodeID'] for n in ray.nodes())\n"
        "print(json.dumps({'actor_nodes': nodes, 'nodes': alive}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=cluster.driver_env(), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pipeline_spans_both_nodes_and_survives_losing_the_worker_node(
    cluster, cluster_sources, cluster_reference, tmp_path
):
    catalog = tmp_path / "ray"
    pipeline = write_pipeline(tmp_path / "r.yaml", catalog, cluster_sources)
    args = ("run", str(pipeline), "--engine", "ray", "--ray-address", cluster.address)
    proc = _cli(cluster, *args)
    wait_for_commits(catalog, "clips", proc, 1)
    placed = _actor_nodes(cluster)
    assert len(placed["actor_nodes"]) == 2 and set(placed["actor_nodes"]) == set(placed["nodes"]), placed
    (raylet,) = [p for p in cluster.processes("worker") if p.name() == "raylet"]
    raylet.kill()  # SIGKILL: the worker node is gone mid-stage
    code, out, err = finish(proc)
    if code != 0:  # a clear one-line failure is allowed; the rerun must then resume and finish
        assert code == 2 and "error:" in err and "Traceback" not in out + err, out + err[-3000:]
        code, out, err = finish(_cli(cluster, *args))
    assert code == 0, out + err[-3000:]
    assert "core_worker.cc" not in err and "max_restarts" not in err, err[-2000:]
    assert "[state-dump]" not in out
    for table, key in (("videos", "video_id"), ("clips", "clip_id")):
        assert table_rows(catalog, table, key) == table_rows(cluster_reference, table, key)


def test_one_cpu_cluster_runs_ingest_instead_of_hanging(
    cluster, cluster_sources, cluster_reference, tmp_path
):
    """The repro of the hang: `egocurate ingest --engine ray` on a cluster with one CPU left."""
    cluster.kill_node("worker")  # idempotent after the test above; makes this test stand alone
    ray_cat = tmp_path / "ray"
    start = time.perf_counter()
    code, out, err = finish(
        _cli(cluster, "ingest", str(cluster_sources), "-c", str(ray_cat), "--engine", "ray", "--ray-address",
             cluster.address, "--no-progress"),
        timeout=180,
    )  # fmt: skip
    assert code == 0, out + err[-3000:]
    assert time.perf_counter() - start < 180
    # The local run of the same sources (the reference pipeline starts with this ingest).
    assert table_rows(ray_cat, "videos", "video_id") == table_rows(cluster_reference, "videos", "video_id")


def test_a_stage_no_node_can_hold_fails_in_seconds_saying_why(cluster, cluster_sources, tmp_path):
    stages = [{"name": "ingest", "resources": {"cpus": 4}}]
    pipeline = write_pipeline(tmp_path / "p.yaml", tmp_path / "cat", cluster_sources, stages)
    start = time.perf_counter()
    code, out, err = finish(_cli(cluster, "run", str(pipeline), "--engine", "ray", "--ray-address",
                                  cluster.address), timeout=120)  # fmt: skip
    assert code == 2, out + err[-2000:]
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]  # errors go to stderr
    assert "cannot be placed" in line and "cpus=4" in line and "cpus=1" in line, line
    assert "Traceback" not in out + err
    assert time.perf_counter() - start < 60


def test_a_stage_without_progress_ends_with_a_clear_error(cluster, cluster_sources, tmp_path):
    """Another job holds the one CPU left: the stage waits, then gives up after the progress timeout."""
    hold = (
        "import ray, sys, time\n"
        f"ray.init(address='{cluster.address}', logging_level='ERROR', log_to_driver=False)\n"
        "@ray.remote(num_cpus=1)\n"
        "class Hold:\n"
        "    def ok(self): return 1\n"
        "h = Hold.remote(); ray.get(h.ok.remote()); print('held', flush=True); time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold], env=cluster.driver_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        code, out, err = finish(
            _cli(cluster, "ingest", str(cluster_sources), "-c", str(tmp_path / "cat"), "--engine", "ray",
                 "--ray-address", cluster.address, "--no-progress", EGOCURATE_PROGRESS_TIMEOUT="4"),
            timeout=120,
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert code == 2, out + err[-2000:]
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "no batch finished in 4 s" in line and "rerun to resume" in line, line


def test_an_unreachable_cluster_is_one_line_and_exit_2(cluster, cluster_sources, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGOCURATE_")}
    args = ["ingest", str(cluster_sources), "-c", str(tmp_path / "c"), "--engine", "ray"]
    done = subprocess.run(
        [sys.executable, "-m", "egocurate.cli.main", *args, "--ray-address", f"127.0.0.1:{free_port()}"],
        env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]  # errors go to stderr
    assert len(lines) == 1, done.stdout + done.stderr
    assert lines[0].startswith("error: cannot reach a Ray cluster at 127.0.0.1:"), lines[0]
    assert "EGOCURATE_RAY_ADDRESS" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr


def test_a_driver_without_the_cluster_token_is_one_line_and_exit_2(cluster, cluster_sources, tmp_path):
    """The cluster runs with token auth; a driver holding another token is told what to set."""
    args = ["ingest", str(cluster_sources), "-c", str(tmp_path / "c"), "--engine", "ray"]
    env = cluster.driver_env(RAY_AUTH_TOKEN="0" * 64)
    code, out, err = finish(cli(env, *args, "--ray-address", cluster.address), timeout=180)
    assert code == 2, out + err[-2000:]
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "RAY_AUTH_TOKEN" in line and "refused" in line, line
    assert "Traceback" not in out + err and "InvalidAuthToken" not in err, err[-2000:]
