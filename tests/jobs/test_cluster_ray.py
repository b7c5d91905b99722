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
from pathlib import Path

import pytest
import yaml

from egocurate.catalog.store import Catalog
from egocurate.jobs.config import PipelineConfig
from egocurate.jobs.pipeline import run_pipeline
from egocurate.testing.cluster import RayLoopbackCluster

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
VIDEOS = 6  # the smallest real recordings: enough batches to kill a node mid-stage, quick on 2 cores
STAGES = [
    {"name": "ingest", "params": {"batch_size": 1}},
    {
        "name": "shots",
        "params": {"detector": "content", "min_clip_s": 2.0, "max_clip_s": 20.0, "batch_size": 1},
    },
]


@pytest.fixture(scope="module")
def sources(shared_data, tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("ray_src")
    for path in sorted(shared_data.glob("*.mp4"), key=lambda p: p.stat().st_size)[:VIDEOS]:
        (src / path.name).symlink_to(path)
    return src


@pytest.fixture(scope="module")
def cluster():
    """Head and one worker node, one CPU each; everything stopped by PID at the end."""
    ray = RayLoopbackCluster()
    try:
        ray.start_head(num_cpus=1)
        ray.add_worker("worker", num_cpus=1)
        ray.wait_for_nodes(2)
        ray.check_loopback()
        yield ray
    finally:
        ray.stop()
        assert not ray.processes(), "cluster processes survived stop()"


def _cli(cluster: RayLoopbackCluster, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "egocurate.cli.main", *args],
        env=cluster.driver_env(PYTHONPATH=str(REPO), **env), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the driver hung for {timeout} s:\n{out[-2000:]}\n{err[-3000:]}")
    return proc.returncode, out, err


def _pipeline(path: Path, catalog: Path, sources: Path, stages=STAGES) -> Path:
    config = {"catalog": str(catalog), "engine": "local", "commit_every": 1, "progress": False,
              "sources": [str(sources)], "stages": stages}  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return path


def _rows(catalog: Path, table: str, key: str) -> list[dict]:
    rows = Catalog(catalog).read(table).sort_by(key).to_pylist()
    assert rows, f"{table} is empty"
    return rows


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


def _wait_for_commit(catalog: Path, table: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    log = catalog / table / "_delta_log"
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if log.is_dir() and len(list(log.glob("*.json"))) >= 2:  # created, then a first batch committed
            return
        time.sleep(0.2)
    pytest.fail(f"no commit to {table} while the run was going (rc={proc.poll()})")


def test_pipeline_spans_both_nodes_and_survives_losing_the_worker_node(cluster, sources, tmp_path):
    local = tmp_path / "local"
    run_pipeline(PipelineConfig(**yaml.safe_load(_pipeline(tmp_path / "l.yaml", local, sources).read_text())))

    catalog = tmp_path / "ray"
    pipeline = _pipeline(tmp_path / "r.yaml", catalog, sources)
    args = ("run", str(pipeline), "--engine", "ray", "--ray-address", cluster.address)
    proc = _cli(cluster, *args)
    _wait_for_commit(catalog, "clips", proc)
    placed = _actor_nodes(cluster)
    assert len(placed["actor_nodes"]) == 2 and set(placed["actor_nodes"]) == set(placed["nodes"]), placed
    (raylet,) = [p for p in cluster.processes("worker") if p.name() == "raylet"]
    raylet.kill()  # SIGKILL: the worker node is gone mid-stage
    code, out, err = _finish(proc)
    if code != 0:  # a clear one-line failure is allowed; the rerun must then resume and finish
        assert code == 2 and "error:" in out and "Traceback" not in out + err, out + err[-3000:]
        code, out, err = _finish(_cli(cluster, *args))
    assert code == 0, out + err[-3000:]
    assert "core_worker.cc" not in err and "max_restarts" not in err, err[-2000:]
    assert "[state-dump]" not in out
    assert _rows(catalog, "videos", "video_id") == _rows(local, "videos", "video_id")
    assert _rows(catalog, "clips", "clip_id") == _rows(local, "clips", "clip_id")


def test_one_cpu_cluster_runs_ingest_instead_of_hanging(cluster, sources, tmp_path):
    """The repro of the hang: `egocurate ingest --engine ray` on a cluster with one CPU left."""
    cluster.kill_node("worker")  # idempotent after the test above; makes this test stand alone
    ray_cat, local_cat = tmp_path / "ray", tmp_path / "local"
    start = time.perf_counter()
    code, out, err = _finish(
        _cli(cluster, "ingest", str(sources), "-c", str(ray_cat), "--engine", "ray", "--ray-address",
             cluster.address, "--no-progress"),
        timeout=180,
    )  # fmt: skip
    assert code == 0, out + err[-3000:]
    assert time.perf_counter() - start < 180
    code, out, err = _finish(_cli(cluster, "ingest", str(sources), "-c", str(local_cat), "--no-progress"))
    assert code == 0, out + err[-3000:]
    assert _rows(ray_cat, "videos", "video_id") == _rows(local_cat, "videos", "video_id")


def test_a_stage_no_node_can_hold_fails_in_seconds_saying_why(cluster, sources, tmp_path):
    stages = [{"name": "ingest", "resources": {"cpus": 4}}]
    pipeline = _pipeline(tmp_path / "p.yaml", tmp_path / "cat", sources, stages)
    start = time.perf_counter()
    code, out, err = _finish(_cli(cluster, "run", str(pipeline), "--engine", "ray", "--ray-address",
                                  cluster.address), timeout=120)  # fmt: skip
    assert code == 2, out + err[-2000:]
    (line,) = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert "cannot be placed" in line and "cpus=4" in line and "cpus=1" in line, line
    assert "Traceback" not in out + err
    assert time.perf_counter() - start < 60


def test_a_stage_without_progress_ends_with_a_clear_error(cluster, sources, tmp_path):
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
        code, out, err = _finish(
            _cli(cluster, "ingest", str(sources), "-c", str(tmp_path / "cat"), "--engine", "ray",
                 "--ray-address", cluster.address, "--no-progress", EGOCURATE_PROGRESS_TIMEOUT="4"),
            timeout=120,
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert code == 2, out + err[-2000:]
    (line,) = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert "no batch finished in 4 s" in line and "rerun to resume" in line, line


def test_an_unreachable_cluster_is_one_line_and_exit_2(cluster, sources, tmp_path):
    from egocurate.testing.cluster import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("EGOCURATE_")}
    done = subprocess.run(
        [sys.executable, "-m", "egocurate.cli.main", "ingest", str(sources), "-c", str(tmp_path / "c"),
         "--engine", "ray", "--ray-address", f"127.0.0.1:{free_port()}"],
        env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stdout.startswith("error: cannot reach a Ray cluster at 127.0.0.1:"), done.stdout
    assert "EGOCURATE_RAY_ADDRESS" in done.stdout and "Traceback" not in done.stdout + done.stderr
