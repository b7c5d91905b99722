"""Driver side of corpus statistics and the HTML report: run the statistics SQL on DuckDB (local)
or Spark, store them in the ``stats`` Delta table, and gather what the report shows.

The statistics themselves are defined in ``annotate.stats`` (one SQL per statistic, both dialects);
the report is rendered by ``annotate.report``. The ``stats`` stage here is a corpus stage
(``jobs.stage.CorpusStage``); ``jobs.corpus.report`` builds the HTML report on top of it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa

from egocurate.annotate import stats as stats_sql
from egocurate.catalog import keep, tables
from egocurate.catalog.query import VIEW_JOINS, connect, register_spark_views
from egocurate.catalog.store import Catalog
from egocurate.jobs.driver import StageSummary

StatsEngine = Literal["local", "spark"]
VERSIONED_TABLES = ("videos", "clips", "clip_quality", "clip_dedup", "clip_labels")
# Tables the clip view joins: the only ones Spark needs to read.
VIEW_TABLES = ("clips", *(name for name, _, _ in VIEW_JOINS))


def reason_expression(thresholds: Mapping[str, float] | None) -> str:
    """SQL naming why a clip is filtered, from the same thresholds as the view's ``keep`` column."""
    rules = []
    for name, value in keep.effective_thresholds(dict(thresholds or {})).items():
        column, comparison, _ = keep.THRESHOLDS[name]
        if comparison != "is" or value != 0:
            rules.append((column, comparison, value))
    return stats_sql.rule_reason_sql(rules)


def compute_local(catalog: Catalog, thresholds: Mapping[str, float] | None = None) -> stats_sql.CorpusStats:
    """Statistics with DuckDB over the catalog's Arrow datasets (small and medium catalogs)."""
    con = connect(catalog, thresholds)

    def materialize(name: str, select: str) -> None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {select}")

    try:
        return stats_sql.compute_stats(
            lambda q: con.sql(q).to_arrow_table(), materialize, "duckdb", reason_expression(thresholds)
        )
    finally:
        con.close()


def compute_spark(
    catalog: Catalog,
    thresholds: Mapping[str, float] | None = None,
    spark: Any = None,
    master: str | None = None,
) -> stats_sql.CorpusStats:
    """Statistics as a Spark job: the same SQL over Spark temp views of the Delta tables' files."""
    if spark is None:
        from egocurate.jobs.engine_logs import route_engine_output
        from egocurate.jobs.runners.spark import spark_session

        route_engine_output(catalog.root, catalog.storage_options)
        spark = spark_session(master, app_name="egocurate-stats")
    register_spark_views(spark, catalog, thresholds, names=list(VIEW_TABLES))
    cached: list[Any] = []

    def materialize(name: str, select: str) -> None:
        frame = spark.sql(select).cache()
        frame.count()  # the join runs once; every statistic reads the cached rows
        frame.createOrReplaceTempView(name)
        cached.append(frame)

    try:
        return stats_sql.compute_stats(
            lambda q: spark.sql(q).toArrow(), materialize, "spark", reason_expression(thresholds)
        )
    finally:
        for frame in cached:
            frame.unpersist()


def compute(
    catalog: Catalog,
    engine: StatsEngine = "local",
    thresholds: Mapping[str, float] | None = None,
    **spark: Any,
) -> stats_sql.CorpusStats:
    if engine == "local":
        return compute_local(catalog, thresholds)
    if engine == "spark":
        return compute_spark(catalog, thresholds, **spark)
    raise ValueError(f"unknown statistics engine {engine!r}; allowed: local, spark")


def catalog_versions(catalog: Catalog) -> dict[str, int]:
    return {name: int(v) for name in VERSIONED_TABLES if (v := catalog.version(name)) is not None}


def commit_stats(
    catalog: Catalog,
    stats: stats_sql.CorpusStats,
    engine: str,
    thresholds: Mapping[str, float] | None = None,
    versions: Mapping[str, int] | None = None,
) -> tuple[str, int]:
    """Append one run's statistics to the ``stats`` table; returns (run id, table version)."""
    now = datetime.now(UTC)
    run_id = now.strftime("%Y%m%dT%H%M%S.%fZ") + "-" + uuid.uuid4().hex[:6]
    versions_json = json.dumps(
        dict(versions if versions is not None else catalog_versions(catalog)), sort_keys=True
    )
    thresholds_json = json.dumps(dict(thresholds or {}), sort_keys=True)
    rows = stats_sql.to_rows(stats)
    for row in rows:
        row.update(
            stat_key=f"{run_id}/{row['section']}/{row['label']}/{row['label2']}",
            stats_run=run_id,
            computed_at=now,
            engine=engine,
            catalog_versions=versions_json,
            thresholds=thresholds_json,
        )
    table = pa.Table.from_pylist(rows, schema=tables.STATS.schema)
    version = catalog.append(tables.STATS, table, operation=f"stats:{engine}")
    return run_id, version


def load_stats(catalog: Catalog, run_id: str | None = None) -> tuple[str, stats_sql.CorpusStats] | None:
    """A stored statistics run (the latest by default), or None if there is none."""
    import pyarrow.compute as pc

    data = catalog.read(tables.STATS.name)
    if data.num_rows == 0:
        return None
    if run_id is None:
        run_id = max(data.column("stats_run").to_pylist())
    rows = data.filter(pc.equal(data.column("stats_run"), run_id))
    if rows.num_rows == 0:
        return None
    return run_id, stats_sql.from_rows(rows.to_pylist())


# ------------------------------------------------------------------------------ pipeline stage
class StatsStage:
    """Corpus statistics of the catalog as a pipeline step (stored in the ``stats`` table)."""

    name = "stats"
    output_table = tables.STATS.name
    corpus = True

    def __init__(
        self,
        engine: StatsEngine = "local",
        thresholds: dict[str, float] | None = None,
        spark_master: str | None = None,
    ):
        self.engine = engine
        self.thresholds = dict(thresholds or {})
        self.spark_master = spark_master

    def run_corpus(self, catalog: Catalog, progress: bool = True) -> StageSummary:
        start = time.perf_counter()
        spark = {"master": self.spark_master} if self.engine == "spark" else {}
        stats = compute(catalog, self.engine, self.thresholds, **spark)
        run_id, version = commit_stats(catalog, stats, self.engine, self.thresholds)
        summary = StageSummary(stage=self.name, engine=self.engine, rows_in=stats.summary.get("clips", 0))
        summary.rows_out = len(stats_sql.to_rows(stats))
        summary.commits, summary.versions = 1, {tables.STATS.name: version}
        summary.seconds = time.perf_counter() - start
        if progress:
            print(f"stats: run {run_id}, {stats.summary.get('clips', 0)} clips, {stats.hours():.3f} h")
        return summary
