"""A catalog written before `videos` had its origin/robot columns: readable as it is, writable after.

The old table is a real Delta table with the schema egocurate had before issue 16; reads fill the
new columns with nulls (the clip view reads them as `origin = 'real'`), and the next write adds
them to the table's schema (old rows stay null) instead of hiding the new values.
"""

from __future__ import annotations

import shutil

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from typer.testing import CliRunner

from egocurate.catalog import tables
from egocurate.catalog.query import sql
from egocurate.catalog.selection import select_clips
from egocurate.catalog.store import Catalog
from egocurate.cli.main import app
from egocurate.jobs.pipeline import ingest
from egocurate.testing.catalog import build_sample_catalog
from egocurate.testing.videos import make_video

NEW = {
    "origin",
    "generator",
    "prompt",
    "initial_frame",
    "dataset_uri",
    "episode_index",
    "camera",
    "actions_uri",
}


def _downgrade_videos(catalog: Catalog) -> pa.Table:
    """Rewrite `videos` as a fresh Delta table with the pre-issue-16 schema (same rows)."""
    rows = catalog.read("videos")
    old_schema = pa.schema([f for f in tables.VIDEOS.schema if f.name not in NEW])
    old = rows.select(old_schema.names).cast(old_schema)
    uri = catalog.uri("videos")
    shutil.rmtree(uri)
    DeltaTable.create(uri, schema=old_schema, name="videos")
    write_deltalake(uri, old, mode="append")
    assert set(DeltaTable(uri).schema().to_arrow().names).isdisjoint(NEW)
    return old


def test_old_catalog_reads_with_null_new_columns_and_evolves_on_write(tmp_path):
    catalog = build_sample_catalog(tmp_path, videos=2, seconds=2.0, latents=False, tokenizer_latents=False)
    old = _downgrade_videos(catalog)

    # Read, untouched: the new columns are there, null; the view says real; origin queries work.
    version = catalog.version("videos")
    videos = catalog.read("videos")
    assert set(videos.column_names) >= NEW and videos.column("origin").null_count == old.num_rows
    clips = sql(catalog, "SELECT origin, count(*) AS n FROM clip_view GROUP BY 1").to_pylist()
    assert clips == [{"origin": "real", "n": catalog.count("clips")}]
    assert select_clips(catalog, "SELECT clip_id FROM clip_view", origin="real").num_rows == catalog.count(
        "clips"
    )
    assert select_clips(catalog, "SELECT clip_id FROM clip_view", origin="generated").num_rows == 0
    result = CliRunner().invoke(app, ["query", "--catalog", catalog.root, "--origin", "real", "--show", "0"])
    assert result.exit_code == 0 and f"{catalog.count('clips')} clip(s)" in result.output, result.output
    assert catalog.version("videos") == version  # reading never writes

    # Write: an ingest into the old table evolves its schema; the old rows keep their values.
    make_video(tmp_path / "new.mp4", seed=9, scenes=1, scene_seconds=1.5, fps=10.0, width=320, height=240)
    ingest([str(tmp_path / "new.mp4")], catalog.root, progress=False)
    assert set(DeltaTable(catalog.uri("videos")).schema().to_arrow().names) >= NEW
    after = {r["video_id"]: r for r in catalog.read("videos").to_pylist()}
    assert len(after) == old.num_rows + 1
    for row in old.to_pylist():
        assert after[row["video_id"]]["uri"] == row["uri"] and after[row["video_id"]]["origin"] is None
    (new,) = [r for r in after.values() if r["uri"].endswith("new.mp4")]
    assert new["origin"] == "real"  # stored, not hidden behind the old schema
    check = CliRunner().invoke(app, ["catalog", "check", "--catalog", catalog.root])
    assert check.exit_code == 0, check.output
