"""One schema per table on every write: a duplicate video ingested in a later run stays queryable."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "egocurate.cli.main", *args], capture_output=True, text=True)


def _file_schemas(catalog: Catalog, name: str) -> list[pa.Schema]:
    return [pq.read_schema(uri.removeprefix("file://")) for uri in catalog.files(name)]


def test_a_byte_copy_ingested_in_a_later_run_keeps_videos_queryable(tmp_path, sample_videos):
    folders = {}
    for name in ("a", "b", "c"):
        folders[name] = tmp_path / name
        folders[name].mkdir()
    for path in sample_videos[:2]:
        shutil.copy(path, folders["a"] / path.name)
    shutil.copy(sample_videos[0], folders["b"] / "copy.mp4")
    shutil.copy(sample_videos[0], folders["c"] / "third_copy.mp4")
    catalog = str(tmp_path / "catalog")
    for name in ("a", "b"):
        done = _cli("ingest", str(folders[name]), "-c", catalog, "--no-progress")
        assert done.returncode == 0, done.stdout + done.stderr
    cat = Catalog(catalog)
    videos = cat.read("videos")
    video_id = videos.filter(pc.ends_with(videos.column("uri"), "clip_0.mp4")).column("video_id")[0].as_py()
    shown = _cli("catalog", "sql", f"select uri, duplicate_uris from videos where video_id='{video_id}'",
                 "-c", catalog, "--format", "json")  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "copy.mp4" in shown.stdout and "clip_0.mp4" in shown.stdout
    third = _cli("ingest", str(folders["c"]), "-c", catalog, "--no-progress")
    assert third.returncode == 0, third.stdout + third.stderr
    videos = cat.read("videos").to_pylist()
    assert len(videos) == 2
    row = next(v for v in videos if v["video_id"] == video_id)
    assert sorted(p.rsplit("/", 1)[-1] for p in [row["uri"], *row["duplicate_uris"]]) == [
        "clip_0.mp4", "copy.mp4", "third_copy.mp4",
    ]  # fmt: skip
    for schema in _file_schemas(cat, "videos"):  # every file of the table: the declared types
        assert [f.type for f in schema] == [f.type for f in tables.VIDEOS.schema]


def test_a_write_that_cannot_be_cast_names_table_column_and_types(tmp_path):
    bad = pa.table({"video_id": ["x"], "bytes": ["not a number"]})
    with pytest.raises(tables.SchemaCastError, match=r"'videos'.*'bytes'.*string.*int64"):
        Catalog(tmp_path / "c").append(tables.VIDEOS, bad)
    view = pa.table({"video_id": pa.array(["x"], pa.string_view())})
    assert tables.conform(view, tables.VIDEOS).schema.field("video_id").type == pa.string()
