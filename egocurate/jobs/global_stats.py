"""Driver side of corpus statistics and the HTML report: run the statistics SQL on DuckDB (local)
or Spark, store them in the ``stats`` Delta table, and gather what the report shows.

The statistics themselves are defined in ``annotate.stats`` (one SQL per statistic, both dialects);
the report is rendered by ``annotate.report``. The two pipeline stages here (``stats`` and
``report``) are corpus-level: the pipeline calls their ``run_global``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from egocurate.annotate import stats as stats_sql
from egocurate.annotate.report import ReportData, render_report
from egocurate.catalog import tables
from egocurate.catalog.query import VIEW_JOINS, connect, register_spark_views
from egocurate.catalog.store import Catalog
from egocurate.jobs.runner import StageSummary

StatsEngine = Literal["local", "spark"]
VERSIONED_TABLES = ("videos", "clips", "clip_quality", "clip_dedup", "clip_labels")
# Tables the clip view joins: the only ones Spark needs to read.
VIEW_TABLES = ("clips", *(name for name, _, _ in VIEW_JOINS))


def reason_expression(thresholds: Mapping[str, float] | None) -> str:
    """SQL naming why a clip is filtered, from the same thresholds as the view's ``keep`` column."""
    try:
        from egocurate.catalog import keep
    except ImportError:  # no keep rules: name thresholds by the min_/max_ convention
        keep = None
    if keep is not None and hasattr(keep, "reason_expression"):
        return keep.reason_expression(dict(thresholds or {}))
    if keep is not None and hasattr(keep, "THRESHOLDS") and hasattr(keep, "effective_thresholds"):
        rules = []
        for name, value in keep.effective_thresholds(dict(thresholds or {})).items():
            column, comparison, _ = keep.THRESHOLDS[name]
            if comparison != "is" or value != 0:
                rules.append((column, comparison, value))
        return stats_sql.rule_reason_sql(rules)
    columns = (
        set(tables.CLIP_QUALITY.columns) | set(tables.CLIP_DEDUP.columns) | set(tables.CLIP_LABELS.columns)
    )
    return stats_sql.threshold_reason_sql(dict(thresholds or {}), columns - {"clip_id"})


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
        from egocurate.jobs.runners.spark import spark_session

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


# ------------------------------------------------------------------------------ report inputs
def _scalar(con: Any, query: str) -> int:
    try:
        return int(con.sql(query).fetchall()[0][0] or 0)
    except Exception:  # an absent optional table counts as zero
        return 0


def funnel(catalog: Catalog, con: Any, stats: stats_sql.CorpusStats) -> list[dict[str, Any]]:
    """The filter funnel: files seen -> videos -> clips -> kept -> labelled, with hours where known."""
    videos = _scalar(con, "SELECT COUNT(*) FROM videos")
    quarantined_files = _scalar(con, "SELECT COUNT(DISTINCT key) FROM quarantine WHERE stage = 'ingest'")
    video_ms = _scalar(con, "SELECT CAST(FLOOR(COALESCE(SUM(duration_s), 0) * 1000) AS BIGINT) FROM videos")
    duplicates = _scalar(con, "SELECT COUNT(*) FROM clip_dedup WHERE is_representative = FALSE")
    labelled = _scalar(con, "SELECT COUNT(*) FROM clip_view WHERE task IS NOT NULL")
    kept_labelled = _scalar(con, "SELECT COUNT(*) FROM clip_view WHERE task IS NOT NULL AND keep")
    h = stats_sql.MS_PER_HOUR
    return [
        {"step": "files discovered", "count": videos + quarantined_files, "hours": None},
        {"step": "quarantined at ingest", "count": quarantined_files, "hours": None},
        {"step": "videos", "count": videos, "hours": video_ms / h},
        {"step": "clips", "count": stats.summary.get("clips", 0), "hours": stats.hours("ms")},
        {"step": "near duplicates (not representative)", "count": duplicates, "hours": None},
        {"step": "kept clips", "count": stats.summary.get("kept_clips", 0), "hours": stats.hours("kept_ms")},
        {"step": "labelled clips", "count": labelled, "hours": None},
        {"step": "kept and labelled", "count": kept_labelled, "hours": None},
    ]


SAMPLE_COLUMNS = (
    "clip_id, video_id, uri, clip_uri, start_frame, end_frame, width, height, video_width, video_height, "
    "task, scene, duration_s"
)


def samples(con: Any, column: str, labels: list[str], per_label: int) -> dict[str, list[dict[str, Any]]]:
    """Up to `per_label` clips (longest first) for each label of `column` (task or scene)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for label in labels:
        rows = con.sql(
            f"SELECT {SAMPLE_COLUMNS} FROM clip_view WHERE {column} = ? "
            "ORDER BY duration_s DESC, clip_id LIMIT ?",
            params=[label, per_label],
        ).to_arrow_table()
        out[label] = rows.to_pylist()
    return out


def dedup_groups(con: Any, groups: int, per_group: int) -> list[list[dict[str, Any]]]:
    """The largest near-duplicate groups, representative first, with frames to show."""
    try:
        top = con.sql(
            "SELECT group_id, COUNT(*) AS n FROM clip_dedup GROUP BY group_id HAVING COUNT(*) > 1 "
            f"ORDER BY n DESC, group_id LIMIT {int(groups)}"
        ).fetchall()
    except Exception:
        return []
    out = []
    for group_id, _ in top:
        rows = con.sql(
            f"SELECT {SAMPLE_COLUMNS}, group_id, is_representative, nearest_similarity FROM clip_view "
            "WHERE group_id = ? "
            "ORDER BY is_representative DESC, nearest_similarity DESC, clip_id LIMIT ?",
            params=[group_id, per_group],
        ).to_arrow_table()
        out.append(rows.to_pylist())
    return out


def quarantine_kinds(con: Any) -> list[tuple[str, str, int]]:
    try:
        query = "SELECT stage, error_kind, COUNT(*) FROM quarantine GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"
        return [tuple(r) for r in con.sql(query).fetchall()]
    except Exception:
        return []


def build_report(
    catalog: Catalog,
    out: str | Path,
    engine: StatsEngine = "local",
    thresholds: Mapping[str, float] | None = None,
    top: int = 12,
    thumbnails: int = 3,
    store: bool = True,
    spark_master: str | None = None,
) -> tuple[Path, str | None, stats_sql.CorpusStats]:
    """Compute (and store) statistics, gather samples, and write one self-contained HTML file."""
    versions = catalog_versions(catalog)
    stats = compute(catalog, engine, thresholds, **({"master": spark_master} if engine == "spark" else {}))
    run_id = commit_stats(catalog, stats, engine, thresholds, versions)[0] if store else None
    con = connect(catalog, thresholds)
    try:
        data = ReportData(
            catalog=catalog.root,
            stats=stats,
            stats_run=run_id,
            engine=engine,
            versions=versions,
            thresholds=dict(thresholds or {}),
            funnel=funnel(catalog, con, stats),
            task_samples=samples(con, "task", [r.label for r in stats.top("per_task", top // 2)], thumbnails),
            scene_samples=samples(
                con, "scene", [r.label for r in stats.top("per_scene", top // 2)], thumbnails
            ),
            dedup_groups=dedup_groups(con, groups=3, per_group=4),
            quarantine=quarantine_kinds(con),
            top=top,
        )
    finally:
        con.close()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(data), encoding="utf-8")
    return path, run_id, stats


# ------------------------------------------------------------------------------ pipeline stages
class StatsStage:
    """Corpus statistics of the catalog as a pipeline step (stored in the ``stats`` table)."""

    name = "stats"
    input_key = "video_id"
    output_table = tables.STATS.name

    def __init__(
        self,
        engine: StatsEngine = "local",
        thresholds: dict[str, float] | None = None,
        spark_master: str | None = None,
    ):
        self.engine = engine
        self.thresholds = dict(thresholds or {})
        self.spark_master = spark_master
        self.resources = {"cpus": 1, "batch_size": 1}

    def setup(self) -> None:
        """Nothing to load."""

    def process(self, batch: pa.Table) -> pa.Table:
        raise TypeError("the stats stage is corpus-level: the pipeline calls run_global")

    def run_global(self, catalog: Catalog, rows: pa.Table, progress: bool = True) -> StageSummary:
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


class ReportStage(StatsStage):
    """Statistics plus the self-contained HTML report (written to `out`, relative to the catalog)."""

    name = "report"

    def __init__(
        self,
        out: str = "report.html",
        engine: StatsEngine = "local",
        thresholds: dict[str, float] | None = None,
        top: int = 12,
        thumbnails: int = 3,
        spark_master: str | None = None,
    ):
        super().__init__(engine, thresholds, spark_master)
        self.out, self.top, self.thumbnails = out, top, thumbnails

    def run_global(self, catalog: Catalog, rows: pa.Table, progress: bool = True) -> StageSummary:
        start = time.perf_counter()
        out = Path(self.out)
        if not out.is_absolute() and "://" not in catalog.root:
            out = Path(catalog.root) / out
        path, run_id, stats = build_report(
            catalog,
            out,
            self.engine,
            self.thresholds,
            self.top,
            self.thumbnails,
            spark_master=self.spark_master,
        )
        summary = StageSummary(stage=self.name, engine=self.engine, rows_in=stats.summary.get("clips", 0))
        summary.rows_out, summary.commits = 1, 1
        summary.seconds = time.perf_counter() - start
        if progress:
            print(f"report: {path} (stats run {run_id})")
        return summary
