"""A real Spark standalone cluster on loopback (master + 2 workers via ``spark-class``): a pipeline
across it, an executor then a worker SIGKILLed mid-stage, final tables equal to a local run's.

Every JVM is bound to 127.0.0.1 and checked (psutil) to listen on loopback only before any work is
sent; everything is stopped by PID in the fixture's finalizer, even when the test fails.
"""

from __future__ import annotations

import os
import time

import psutil
import pytest
from loopback_cluster import (
    REPO,
    SparkLoopbackCluster,
    cli,
    finish,
    free_port,
    table_rows,
    wait_for_commits,
    write_pipeline,
)

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def spark_cluster():
    spark = SparkLoopbackCluster()
    try:
        spark.start_master()
        spark.add_worker("worker1")
        spark.add_worker("worker2")
        spark.wait_for_workers(2)
        spark.check_loopback()
        yield spark
    finally:
        spark.stop()
        assert not spark.processes(), "cluster processes survived stop()"


def _dead(proc: psutil.Process) -> bool:
    return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE


def _wait_for_executors(spark: SparkLoopbackCluster, timeout: float = 90) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if spark.executors("worker1") and spark.executors("worker2"):
            return
        time.sleep(0.3)
    raise AssertionError("executors did not start on both workers")


def test_pipeline_survives_losing_an_executor_then_a_worker(
    spark_cluster, cluster_sources, cluster_reference, tmp_path
):
    catalog = tmp_path / "spark"
    pipeline = write_pipeline(tmp_path / "s.yaml", catalog, cluster_sources)
    conf = ["spark.executor.memory=512m", "spark.executor.cores=1", f"spark.executorEnv.PYTHONPATH={REPO}"]
    args = ["run", str(pipeline), "--engine", "spark", "--spark-master", spark_cluster.master]
    for item in conf:
        args += ["--spark-conf", item]
    env = spark_cluster.env("driver", SPARK_LOCAL_IP="127.0.0.1")
    proc = cli(env, *args)
    _wait_for_executors(spark_cluster)
    spark_cluster.check_loopback()  # executors and their Python workers too
    wait_for_commits(catalog, "clips", proc, 1, timeout=400)
    (executor,) = spark_cluster.executors("worker1")
    executor.kill()  # SIGKILL an executor JVM mid-stage; its worker starts a new one
    wait_for_commits(catalog, "clips", proc, 2, timeout=400)
    (worker,) = [
        p for p in spark_cluster.processes("worker1") if "deploy.worker.Worker" in " ".join(p.cmdline())
    ]
    worker.kill()  # then the whole worker node
    code, out, err = finish(proc, timeout=400)
    if code != 0:  # a clear one-line failure is allowed; the rerun must then resume and finish
        assert code == 2 and "error:" in err and "Traceback" not in out + err, out + err[-3000:]
        code, out, err = finish(cli(env, *args))
    assert code == 0, out + err[-3000:]
    assert all(_dead(p) for p in (executor, worker))
    for table, key in (("videos", "video_id"), ("clips", "clip_id")):
        assert table_rows(catalog, table, key) == table_rows(cluster_reference, table, key)


def test_an_unreachable_master_is_one_line_and_exit_2(cluster_sources, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGOCURATE_")}
    done = finish(
        cli(env, "ingest", str(cluster_sources), "-c", str(tmp_path / "c"), "--engine",
            "spark", "--spark-master", f"spark://127.0.0.1:{free_port()}"),
        timeout=60,
    )  # fmt: skip
    code, out, err = done
    assert code == 2, out + err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]  # errors go to stderr
    assert len(lines) == 1, out + err
    line = lines[0]
    assert line.startswith("error: cannot reach the Spark master at spark://127.0.0.1:"), line
    assert "EGOCURATE_SPARK_MASTER" in line and "Traceback" not in out + err


def test_a_job_no_executor_can_take_ends_with_a_clear_error(spark_cluster, cluster_sources, tmp_path):
    """Executors bigger than any worker: Spark would wait forever; the progress timeout ends the stage."""
    args = ["ingest", str(cluster_sources), "-c", str(tmp_path / "cat"), "--engine", "spark", "--no-progress",
            "--spark-master", spark_cluster.master, "--spark-conf", "spark.executor.memory=64g"]  # fmt: skip
    env = spark_cluster.env("driver", SPARK_LOCAL_IP="127.0.0.1", EGOCURATE_PROGRESS_TIMEOUT="5")
    start = time.perf_counter()
    code, out, err = finish(cli(env, *args), timeout=180)
    assert code == 2, out + err[-3000:]
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]  # errors go to stderr
    assert "made no progress in 5 s" in line and "rerun to resume" in line, line
    assert "Traceback" not in out + err
    assert time.perf_counter() - start < 120
