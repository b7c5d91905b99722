"""The Spark engine: ``mapInArrow`` over the input rows, for file-heavy and tabular work.

The manifest schema is fixed, so Spark never needs to know a stage's output schema: workers write
Parquet parts and return manifests; the driver commits them per work unit.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from egocurate.catalog.store import Catalog
from egocurate.jobs.runners import EngineError
from egocurate.jobs.stage import Stage
from egocurate.jobs.worker import MANIFEST_SCHEMA, run_on_worker

MANIFEST_DDL = (
    "table string, path string, size long, num_rows long, keys array<string>, "
    "rows_in long, video_seconds double, worker_seconds double, stage string"
)

DEFAULT_PROGRESS_TIMEOUT_S = 300.0

# Python workers are reused across tasks, but every task unpickles its own copy of the stage, so
# the set-up copy is cached per worker process under a token that names this run of the stage.
_READY: dict[str, Stage] = {}


def _ready(stage: Stage, token: str) -> Stage:
    if token not in _READY:
        _READY.clear()  # one stage at a time per worker: drop models of earlier stages
        stage.setup()
        _READY[token] = stage
    return _READY[token]


def check_master(master: str) -> None:
    """Fail in seconds when no standalone master answers at a ``spark://host:port[,host:port]`` URL."""
    if not master.startswith("spark://"):
        return
    errors = []
    for hostport in master.removeprefix("spark://").split(","):
        host, _, port = hostport.rpartition(":")
        try:
            socket.create_connection((host, int(port or 7077)), timeout=5).close()
            return
        except (OSError, ValueError) as exc:
            errors.append(f"{hostport}: {getattr(exc, 'strerror', None) or exc}")
    raise EngineError(
        f"cannot reach the Spark master at {master} ({'; '.join(errors)}); set --spark-master or "
        "EGOCURATE_SPARK_MASTER to the master's spark://host:port"
    )


def spark_session(
    master: str | None = None, app_name: str = "egocurate", delta: bool = False, conf: dict | None = None
):
    """A SparkSession for ``master`` (``local[*]`` by default) with Arrow enabled.

    With ``delta=True`` the delta-spark jars are added via ``configure_spark_with_delta_pip`` (this
    fetches them through Ivy once; on a cluster set ``spark.jars.packages`` instead, see README).
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    master = master or os.environ.get("EGOCURATE_SPARK_MASTER")
    submitted = master is None and "PYSPARK_GATEWAY_PORT" in os.environ  # under spark-submit: its --master
    master = master or "local[*]"
    check_master(master)
    builder = SparkSession.builder if submitted else SparkSession.builder.master(master)
    builder = (
        builder.appName(app_name)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.driver.memory", os.environ.get("EGOCURATE_SPARK_DRIVER_MEMORY", "2g"))
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    if delta:
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(
            builder.config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension").config(
                "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
            )
        )
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - a session that cannot start is one line for the user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EngineError(
            f"cannot start Spark on {master}: {first}; check --spark-master / EGOCURATE_SPARK_MASTER "
            "and --spark-conf"
        ) from None
    spark.sparkContext.setLogLevel(os.environ.get("EGOCURATE_SPARK_LOG_LEVEL", "ERROR"))
    return spark


class SparkEngine:
    """Runs stages with ``mapInArrow`` on ``master`` (``local[*]``, ``spark://…``, ``yarn``, ``k8s://…``)."""

    name = "spark"

    def __init__(
        self,
        master: str | None = None,
        work_unit_rows: int = 256,
        conf: dict | None = None,
        progress_timeout: float | None = None,
    ):
        from pyspark import SparkContext

        # A run makes one session and every Spark stage (and the corpus statistics, through
        # getOrCreate) reuses it; close() stops it at the end of the run unless it was there before.
        self._owns_session = SparkContext._active_spark_context is None
        self.spark = spark_session(master, conf=conf)
        self.work_unit_rows = work_unit_rows
        env_timeout = os.environ.get("EGOCURATE_PROGRESS_TIMEOUT")
        self.progress_timeout = float(progress_timeout or env_timeout or DEFAULT_PROGRESS_TIMEOUT_S)

    def _collect(self, df: Any, stage: str, batches: int) -> pa.Table:
        """Run one work unit's job; cancel it and fail when it outlives its batches' progress timeout.

        Spark waits forever for executors it cannot get (all workers gone, or none big enough), so
        the job runs in a thread under its own job group, and the group is cancelled on timeout.
        """
        sc = self.spark.sparkContext
        group = f"egocurate-{uuid.uuid4().hex[:8]}"
        waves = math.ceil(batches / max(1, sc.defaultParallelism))
        limit = self.progress_timeout * max(1, waves)
        result: dict[str, Any] = {}

        def job() -> None:
            try:
                sc.setJobGroup(group, f"egocurate {stage}", interruptOnCancel=True)
                result["out"] = df.toArrow()
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                result["error"] = exc

        thread = threading.Thread(target=job, name=group, daemon=True)
        thread.start()
        thread.join(limit)
        if thread.is_alive():
            sc.cancelJobGroup(group)
            thread.join(5)  # a cancelled collect may stay blocked on its socket; the thread is a daemon
            raise EngineError(
                f"stage {stage!r}: a Spark job of {batches} batch(es) made no progress in {limit:g} s "
                "(no executors that fit?); committed work is kept, rerun to resume "
                "(EGOCURATE_PROGRESS_TIMEOUT sets the limit per batch wave)"
            )
        if "error" in result:
            raise result["error"]
        return result["out"]

    def map(self, stage: Stage, rows: pa.Table, catalog: Catalog) -> Iterator[pa.Table]:
        res = stage.resources
        root, storage_options = catalog.root, catalog.storage_options
        token = uuid.uuid4().hex

        def process(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            ready = _ready(stage, token)
            for record_batch in batches:
                table = pa.Table.from_batches([record_batch])
                for offset in range(0, table.num_rows, res.batch_size):
                    manifest = run_on_worker(
                        ready, table.slice(offset, res.batch_size), root, storage_options
                    )
                    yield from manifest.to_batches()

        # One Spark job per work unit, so a killed run keeps everything committed before it.
        for offset in range(0, rows.num_rows, self.work_unit_rows):
            unit = rows.slice(offset, self.work_unit_rows)
            partitions = max(1, math.ceil(unit.num_rows / res.batch_size))
            df = self.spark.createDataFrame(unit).repartition(partitions).mapInArrow(process, MANIFEST_DDL)
            yield self._collect(df, stage.name, partitions).cast(MANIFEST_SCHEMA)

    def close(self) -> None:
        """Stop the session this engine started (its executors end; one already running stays)."""
        if self._owns_session:
            self.spark.stop()
