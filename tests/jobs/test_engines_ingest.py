"""The same ingest on the local, Ray and Spark engines: identical rows, folded duplicates, free reruns."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pytest

from egocurate.catalog.query import register_spark_views, sql
from egocurate.catalog.store import Catalog
from egocurate.ingest.discover import discover
from egocurate.ingest.probe_stage import ProbeStage
from egocurate.jobs.driver import run_stage
from egocurate.jobs.runners.local import LocalEngine


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory, sample_videos, bad_files):
    """Real videos, one exact copy under another name, and one bad file of each kind."""
    src = tmp_path_factory.mktemp("engine_src")
    for path in sample_videos:
        shutil.copy(path, src / path.name)
    shutil.copy(sample_videos[0], src / "copy of clip_0.mp4")
    for name, path in bad_files.items():
        shutil.copy(path, src / f"bad_{name}.mp4")
    return src


def _videos(catalog: Catalog) -> list[dict]:
    rows = catalog.read("videos").sort_by("video_id").to_pylist()
    assert rows, "ingest produced no rows"
    return rows


def _ingest(tmp_path, source_dir, engine) -> Catalog:
    catalog = Catalog(tmp_path / engine.name)
    rows = discover([str(source_dir)])
    run_stage(ProbeStage(batch_size=2), rows, catalog, engine, commit_every=4, progress=False)
    return catalog


def test_local_ray_and_spark_produce_identical_rows(tmp_path, source_dir, ray_engine, spark_engine):
    results = {e.name: _ingest(tmp_path, source_dir, e) for e in (LocalEngine(), ray_engine, spark_engine)}
    local = _videos(results["local"])
    assert _videos(results["ray"]) == local
    assert _videos(results["spark"]) == local
    quarantine = {
        name: sorted(
            (r["uri"].rsplit("/", 1)[-1], r["error_kind"]) for r in cat.read("quarantine").to_pylist()
        )
        for name, cat in results.items()
    }
    assert quarantine["ray"] == quarantine["local"] == quarantine["spark"]
    assert len(quarantine["local"]) == 6


def test_exact_duplicate_is_recorded_once_with_its_other_uri(tmp_path, source_dir):
    catalog = _ingest(tmp_path, source_dir, LocalEngine())
    rows = _videos(catalog)
    assert len(rows) == 3
    (dup,) = [r for r in rows if r["duplicate_uris"]]
    assert dup["uri"].endswith("clip_0.mp4") and dup["duplicate_uris"] == [
        str(source_dir / "copy of clip_0.mp4")
    ]


def test_duplicate_arriving_in_a_later_run_is_merged_not_added(tmp_path, sample_videos):
    catalog = Catalog(tmp_path / "cat")
    first = pa.table({"uri": [str(sample_videos[0])]})
    run_stage(ProbeStage(), first, catalog, LocalEngine(), progress=False)
    copy = tmp_path / "later copy.mp4"
    shutil.copy(sample_videos[0], copy)
    run_stage(ProbeStage(), pa.table({"uri": [str(copy)]}), catalog, LocalEngine(), progress=False)
    (row,) = catalog.read("videos").to_pylist()
    assert row["uri"] == str(sample_videos[0]) and row["duplicate_uris"] == [str(copy)]


def test_second_run_does_no_work_and_leaves_versions_unchanged(tmp_path, source_dir, spark_engine):
    catalog = _ingest(tmp_path, source_dir, LocalEngine())
    before = {name: (catalog.version(name), catalog.count(name)) for name in catalog.tables()}
    rows = discover([str(source_dir)])
    for engine in (LocalEngine(), spark_engine):
        summary = run_stage(ProbeStage(), rows, catalog, engine, progress=False)
        assert summary.rows_in == 0 and summary.rows_skipped == rows.num_rows and summary.commits == 0
    assert {name: (catalog.version(name), catalog.count(name)) for name in catalog.tables()} == before


def test_spark_sql_reads_the_same_tables_without_delta_jars(tmp_path, source_dir, spark_engine):
    catalog = _ingest(tmp_path, source_dir, LocalEngine())
    register_spark_views(spark_engine.spark, catalog, names=["videos", "quarantine", "clips"])
    query = "SELECT count(*) AS n, round(sum(duration_s), 3) AS s FROM videos"
    spark_row = spark_engine.spark.sql(query).collect()[0].asDict()
    duck_row = sql(catalog, query).to_pylist()[0]
    assert spark_row == duck_row and spark_row["n"] == 3
    kinds = {r["error_kind"] for r in spark_engine.spark.sql("SELECT error_kind FROM quarantine").collect()}
    assert kinds == {"truncated", "zero_length", "audio_only", "unreadable", "absurd_metadata"}
