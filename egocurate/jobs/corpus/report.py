"""The HTML report as a corpus stage: statistics (``jobs.corpus.stats``) plus what the page shows.

The page itself is rendered by ``annotate.report`` (pure: data in, HTML out); this module gathers
its inputs from the catalog.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from egocurate.annotate import stats as stats_sql
from egocurate.annotate.report import ReportData, render_report
from egocurate.catalog.query import connect
from egocurate.catalog.store import Catalog
from egocurate.jobs.corpus.stats import StatsEngine, StatsStage, catalog_versions, commit_stats, compute
from egocurate.jobs.driver import StageSummary


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
