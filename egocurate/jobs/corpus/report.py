"""The HTML report as a corpus stage: statistics (``jobs.corpus.stats``) plus what the page shows.

The page itself is rendered by ``annotate.report`` (pure: data in, HTML out); this module gathers
its inputs from the catalog. A table that is absent reads as empty (``catalog.query.connect``
registers it so), and its section shows nothing; a table that exists but cannot be read raises, as
every other reader does, rather than showing as an empty section.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from egocurate.annotate import stats as stats_sql
from egocurate.annotate.report import ReportData, render_report
from egocurate.catalog import tables
from egocurate.catalog.keep import THRESHOLDS, effective_thresholds
from egocurate.catalog.query import connect
from egocurate.catalog.store import Catalog
from egocurate.jobs.corpus.stats import StatsEngine, StatsStage, catalog_versions, commit_stats, compute
from egocurate.jobs.driver import StageSummary


def _scalar(con: Any, query: str) -> int:
    """One integer from `query` (NULL is 0). An absent table is registered empty by ``connect``, so
    it counts as zero; a table that cannot be read raises (never a zero that looks like data)."""
    return int(con.sql(query).fetchall()[0][0] or 0)


def funnel(catalog: Catalog, con: Any, stats: stats_sql.CorpusStats) -> list[dict[str, Any]]:
    """videos -> probed -> quarantined (by kind) -> too short -> clips -> kept, each with its hours.

    Hours are None where nothing measured them (a file quarantined at ingest was never probed).
    """
    h = stats_sql.MS_PER_HOUR
    videos = _scalar(con, "SELECT COUNT(*) FROM videos")
    video_ms = _scalar(con, "SELECT CAST(FLOOR(COALESCE(SUM(duration_s), 0) * 1000) AS BIGINT) FROM videos")
    kinds = con.sql(  # no quarantine table yet: registered empty, so no kinds
        "SELECT COALESCE(error_kind, 'unknown'), COUNT(DISTINCT key) FROM quarantine "
        "WHERE stage = 'ingest' GROUP BY 1 ORDER BY 2 DESC, 1"
    ).fetchall()
    quarantined = sum(int(n) for _, n in kinds)
    short = "FROM videos v WHERE NOT EXISTS (SELECT 1 FROM clips c WHERE c.video_id = v.video_id)"
    short_n = _scalar(con, f"SELECT COUNT(*) {short}")
    short_ms = _scalar(con, f"SELECT CAST(FLOOR(COALESCE(SUM(v.duration_s), 0) * 1000) AS BIGINT) {short}")
    clips, kept = stats.summary.get("clips", 0), stats.summary.get("kept_clips", 0)
    steps = [
        {"step": "videos found", "count": videos + quarantined, "hours": None},
        {"step": "probed", "count": videos, "hours": video_ms / h},
    ]
    steps += [{"step": f"quarantined: {kind}", "count": int(n), "hours": None} for kind, n in kinds]
    steps += [
        {"step": "too short (no clip)", "count": short_n, "hours": short_ms / h},
        {"step": "clips", "count": clips, "hours": stats.hours("ms")},
        {
            "step": "filtered by thresholds",
            "count": clips - kept,
            "hours": (stats.summary.get("ms", 0) - stats.summary.get("kept_ms", 0)) / h,
        },
        {"step": "kept", "count": kept, "hours": stats.hours("kept_ms")},
    ]
    return steps


MODEL_COLUMNS = (  # (what the model produced, table, model id column)
    ("labels", "clip_labels", "label_model"),
    ("captions", "clip_captions", "caption_model"),
    ("latent actions", "clip_latents", "lam_model_id"),
    ("tokenizer latents", "clip_tokenizer_latents", "tokenizer_id"),
    ("embeddings", "clip_embeddings", "model_id"),
)


def models(con: Any) -> list[dict[str, Any]]:
    """Which model produced each kind of output, with how many clips: the provenance the page shows.

    Labels are split by their source (given text, caption, zero-shot), since the model's role differs.
    """
    out = []
    for kind, table, column in MODEL_COLUMNS:
        source = "label_source" if table == "clip_labels" else "NULL"
        rows = con.sql(  # a stage that has not run: its table is registered empty, so no rows
            f"SELECT COALESCE({column}, 'unknown'), {source}, COUNT(*) FROM {table} "
            "GROUP BY 1, 2 ORDER BY 3 DESC, 1"
        ).fetchall()
        for model_id, how, n in rows:
            label = f"{kind} ({how})" if how else kind
            out.append({"kind": label, "model_id": str(model_id), "clips": int(n)})
    return out


def quality_values(con: Any, limit: int = 50_000) -> dict[str, list[float]]:
    """Each quality score's values (up to `limit` clips), for the distribution plots."""
    columns = [f.name for f in tables.CLIP_QUALITY.schema if pa.types.is_floating(f.type)]
    columns = [c for c in columns if c not in ("duration_s", "fps")]
    table = con.sql(f"SELECT {', '.join(columns)} FROM clip_quality LIMIT {int(limit)}").to_arrow_table()
    out = {}
    for name in columns:
        values = [float(v) for v in table.column(name).to_pylist() if v is not None and v == v]
        if values:
            out[name] = values
    return out


def threshold_lines(thresholds: Mapping[str, float] | None) -> dict[str, list[tuple[str, str, float]]]:
    """Score column -> [(threshold name, comparison, value)] of the thresholds in force."""
    out: dict[str, list[tuple[str, str, float]]] = {}
    for name, value in effective_thresholds(thresholds).items():
        column, comparison, _ = THRESHOLDS[name]
        if comparison != "is":
            out.setdefault(column, []).append((name, comparison, value))
    return out


def quarantine_rows(con: Any, limit: int = 100) -> list[list[Any]]:
    """The latest quarantined items: time, stage, kind, uri, message."""
    rows = con.sql(
        "SELECT time, stage, error_kind, uri, message FROM quarantine ORDER BY time DESC NULLS LAST, uri "
        f"LIMIT {int(limit)}"
    ).fetchall()
    return [[("" if t is None else str(t)[:19]), st, k, u, (m or "")[:200]] for t, st, k, u, m in rows]


def run_history(catalog: Catalog, limit: int = 8) -> dict[str, list[list[Any]]]:
    """The latest Delta commits of every table: version, ISO time, operation, rows added."""
    out = {}
    for name in catalog.tables():
        rows = []
        for row in catalog.history(name, limit=limit):  # a broken log raises CatalogReadError
            metrics = row.get("operationMetrics") or {}
            added = metrics.get("num_added_rows", metrics.get("num_target_rows_inserted", ""))
            operation = row.get("egocurate.operation") or row.get("operation")
            rows.append([row.get("version"), stats_sql.iso_time(row.get("timestamp")), operation, added])
        out[name] = rows
    return out


SAMPLE_COLUMNS = (
    "clip_id, video_id, uri, clip_uri, start_frame, end_frame, width, height, video_width, video_height, "
    "task, scene, duration_s, label_source, label_model, lam_model_id"
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
    top = con.sql(
        "SELECT group_id, COUNT(*) AS n FROM clip_dedup GROUP BY group_id HAVING COUNT(*) > 1 "
        f"ORDER BY n DESC, group_id LIMIT {int(groups)}"
    ).fetchall()
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
    """(stage, error kind, count) of every quarantined item."""
    query = "SELECT stage, error_kind, COUNT(*) FROM quarantine GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"
    return [tuple(r) for r in con.sql(query).fetchall()]


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
    """Compute (and store) statistics, gather samples, and write one self-contained HTML file.

    Every read comes first: a table that cannot be read raises (``CatalogReadError`` or DuckDB's
    scan error, one CLI line each) before statistics are stored or the page is written, so a broken
    catalog never yields a report with a section silently empty.
    """
    versions = catalog_versions(catalog)
    stats = compute(catalog, engine, thresholds, **({"master": spark_master} if engine == "spark" else {}))
    con = connect(catalog, thresholds)
    try:
        data = ReportData(
            catalog=catalog.root,
            stats=stats,
            engine=engine,
            versions=versions,
            thresholds=effective_thresholds(thresholds),
            threshold_overrides=dict(thresholds or {}),
            threshold_lines=threshold_lines(thresholds),
            funnel=funnel(catalog, con, stats),
            models=models(con),
            quality=quality_values(con),
            quarantine_rows=quarantine_rows(con),
            history=run_history(catalog),
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
    data.stats_run = commit_stats(catalog, stats, engine, thresholds, versions)[0] if store else None
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(data), encoding="utf-8")
    return path, data.stats_run, stats


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

    def run_corpus(self, catalog: Catalog, progress: bool = True) -> StageSummary:
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
