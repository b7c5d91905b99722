"""Corpus statistics: exact numbers on a hand-made catalog, Spark == local runner, versioned storage."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from egocurate.annotate import stats as S
from egocurate.catalog import tables
from egocurate.catalog.store import Catalog
from egocurate.jobs.config import PipelineConfig, StageConfig
from egocurate.jobs.corpus import stats as corpus_stats
from egocurate.jobs.pipeline import run_pipeline
from egocurate.testing.corpus_tables import synthetic_tables


def _hand_catalog(root) -> Catalog:
    cat = Catalog(root)
    cat.append(
        tables.VIDEOS,
        pa.table(
            {
                "video_id": ["v1", "v2"],
                "uri": ["/a.mp4", "/b.mp4"],
                "dataset": ["egodex", None],
                "source": ["m.jsonl", "folder"],
                "width": [1920, 640],
                "height": [1080, 480],
            }
        ),
    )
    cat.append(
        tables.CLIPS,
        pa.table(
            {
                "clip_id": ["c1", "c2", "c3", "c4"],
                "video_id": ["v1", "v2", "v1", "v2"],
                "start_frame": [0, 0, 90, 150],
                "end_frame": [90, 150, 135, 450],
                "duration_s": [3.0, 5.0, 1.5, 10.0],
                "width": [None, None, 1280, None],
                "height": [None, None, 720, None],
            }
        ),
    )
    cat.append(
        tables.CLIP_LABELS,
        pa.table(
            {
                "clip_id": ["c1", "c2", "c3"],
                "task": ["pour liquid", "pour liquid", "cut vegetable"],
                "scene": ["kitchen", "kitchen", "kitchen"],
                "label_source": ["given", "zeroshot", "given"],
                "objects": pa.array([["cup", "water"], ["cup"], ["knife", "onion"]], pa.list_(pa.string())),
            }
        ),
    )
    return cat


@pytest.fixture(scope="module")
def spark():
    from egocurate.jobs.runners.spark import spark_session

    session = spark_session(
        "local[2]",
        app_name="egocurate-stats-test",
        conf={"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2"},
    )
    yield session


def test_local_statistics_are_exact(tmp_path):
    stats = corpus_stats.compute_local(_hand_catalog(tmp_path))
    assert stats.summary == {
        "clips": 4,
        "ms": 19_500,
        "kept_ms": 19_500,
        "kept_clips": 4,
        "videos": 2,
        "labelled_clips": 3,
        "unique_tasks": 2,
        "unique_scenes": 1,
        "unique_objects": 4,
        "unique_sources": 2,
    }
    assert stats.section("per_task") == [
        S.StatRow("pour liquid", "", 2, 8_000, 8_000),
        S.StatRow("cut vegetable", "", 1, 1_500, 1_500),
    ]
    assert stats.section("per_source") == [
        S.StatRow("folder", "", 2, 15_000, 15_000),
        S.StatRow("egodex", "", 2, 4_500, 4_500),
    ]
    assert stats.section("per_object")[0] == S.StatRow("cup", "", 2, 8_000, 8_000)
    assert stats.section("cooccurrence") == [
        S.StatRow("pour liquid", "kitchen", 2, 8_000, 8_000),
        S.StatRow("cut vegetable", "kitchen", 1, 1_500, 1_500),
    ]
    assert [(r.label, r.clips) for r in stats.section("duration_hist")] == [
        ("0-2s", 1),
        ("2-4s", 1),
        ("4-8s", 1),
        ("8-16s", 1),
    ]
    assert [(r.label, r.clips) for r in stats.section("resolution_hist")] == [
        ("480p", 2),
        ("720p", 1),
        ("1080p", 1),
    ]
    assert stats.long_tail["task"] == {"labels": 2, "50": 1, "90": 2, "99": 2}
    assert stats.section("filter") == [S.StatRow("kept", "", 4, 19_500, 19_500)]


def test_coverage_counts_labels_largest_first():
    rows = [S.StatRow(str(i), clips=1, ms=ms) for i, ms in enumerate([10, 50, 25, 10, 5])]
    assert S.coverage(rows) == {"labels": 5, "50": 1, "90": 4, "99": 5}
    assert S.coverage([]) == {"labels": 0, "50": 0, "90": 0, "99": 0}


def test_threshold_reasons_name_the_first_failed_threshold():
    expr = S.threshold_reason_sql(
        {"min_motion": 0.5, "max_blur": 0.8, "min_bogus": 1}, ["motion", "blur", "is_representative"]
    )
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES (0.9, 0.9, TRUE), (0.1, 0.1, TRUE), (0.9, 0.1, FALSE),"
        " (0.9, 0.1, TRUE)) AS v(motion, blur, is_representative)"
    )
    assert [r[0] for r in con.sql(f"SELECT {expr} FROM t").fetchall()] == [
        "blur > 0.8",
        "motion < 0.5",
        "near duplicate",
        "other",
    ]
    with pytest.raises(ValueError):
        S.threshold_reason_sql({"min_x; DROP TABLE t": 1}, ["x; DROP TABLE t"])


def test_spark_and_local_runner_give_identical_statistics(tmp_path, spark):
    cat = Catalog(tmp_path)
    for name, table in synthetic_tables(3_000, seed=7).items():
        cat.append(tables.spec_for(name), table)
    local = corpus_stats.compute_local(cat)
    on_spark = corpus_stats.compute_spark(cat, spark=spark)
    assert on_spark == local
    assert all(local.sections[name] for name in ("per_task", "per_object", "cooccurrence", "resolution_hist"))
    assert local.summary["clips"] == 3_000 and local.summary["unique_tasks"] > 100
    tail = local.long_tail["task"]
    assert 1 <= tail["50"] < tail["90"] < tail["99"] <= tail["labels"]


def test_statistics_are_stored_per_run_and_read_back(tmp_path):
    cat = _hand_catalog(tmp_path)
    stats = corpus_stats.compute_local(cat)
    run_id, version = corpus_stats.commit_stats(cat, stats, "local", {"min_motion": 0.5})
    stored = cat.read("stats").to_pylist()
    assert {r["stats_run"] for r in stored} == {run_id} and len(stored) == len(S.to_rows(stats))
    assert '"clips"' in stored[0]["catalog_versions"] and stored[0]["thresholds"] == '{"min_motion": 0.5}'
    assert corpus_stats.load_stats(cat) == (run_id, stats)
    # A later run is a new Delta version; the old one stays readable.
    cat.append(tables.CLIPS, pa.table({"clip_id": ["c5"], "video_id": ["v1"], "duration_s": [2.0]}))
    summary = run_pipeline(
        PipelineConfig(catalog=str(tmp_path), stages=[StageConfig(name="stats")], progress=False)
    )
    assert summary[0].versions["stats"] == version + 1
    latest_run, latest = corpus_stats.load_stats(cat)
    assert latest_run != run_id and latest.summary["clips"] == 5
    assert corpus_stats.load_stats(cat, run_id)[1].summary["clips"] == 4


def test_filtered_hours_and_reasons_follow_the_keep_thresholds(tmp_path):
    cat = Catalog(tmp_path)
    for name, table in synthetic_tables(1_000, seed=11).items():
        cat.append(tables.spec_for(name), table)
    stats = corpus_stats.compute_local(cat, {"min_motion": 0.5})
    kept = sql_count(cat, "SELECT COUNT(*) FROM clip_view WHERE keep", {"min_motion": 0.5})
    filter_rows = {r.label: r for r in stats.section("filter")}
    assert filter_rows["kept"].clips == kept == stats.summary["kept_clips"]
    assert sum(r.clips for r in stats.section("filter_reason")) == filter_rows["filtered"].clips > 0
    reasons = {r.label for r in stats.section("filter_reason")}
    assert "motion < 0.5" in reasons and "near duplicate" in reasons and "other" not in reasons
    assert sum(r.ms for r in stats.section("filter")) == stats.summary["ms"]


def sql_count(cat: Catalog, query: str, thresholds: dict) -> int:
    from egocurate.catalog.query import connect

    con = connect(cat, thresholds)
    try:
        return int(con.sql(query).fetchall()[0][0])
    finally:
        con.close()
