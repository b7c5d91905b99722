"""The Delta catalog: atomic multi-part commits, versions, time travel, upserts, SQL."""

from __future__ import annotations

import os
import time

import pyarrow as pa
import pytest

from egocurate.catalog import tables
from egocurate.catalog.query import clip_view, sql
from egocurate.catalog.store import Catalog, NullKeyError, VacuumRetentionError, write_part


def _quarantine_rows(uris: list[str]) -> pa.Table:
    return tables.conform(
        pa.table({"uri": uris, "stage": ["t"] * len(uris), "key": uris, "error_kind": ["x"] * len(uris)}),
        tables.QUARANTINE,
    )


def test_parts_are_invisible_until_committed_then_visible_in_one_version(tmp_path):
    catalog = Catalog(tmp_path / "cat")
    catalog.ensure(tables.QUARANTINE)
    v0 = catalog.version("quarantine")
    parts = [
        write_part(catalog.root, tables.QUARANTINE, _quarantine_rows([f"u{i}", f"v{i}"]), f"t{i}")
        for i in range(3)
    ]
    # Files are on disk, but no reader sees them: a killed worker leaves only orphans.
    assert catalog.count("quarantine") == 0
    version = catalog.commit_parts(tables.QUARANTINE, parts)
    assert version == v0 + 1
    assert catalog.count("quarantine") == 6
    assert sorted(catalog.distinct("quarantine", "uri")) == sorted(
        [f"u{i}" for i in range(3)] + [f"v{i}" for i in range(3)]
    )


def test_time_travel_and_history(tmp_path):
    catalog = Catalog(tmp_path / "cat")
    catalog.append(tables.QUARANTINE, _quarantine_rows(["a"]))
    catalog.append(tables.QUARANTINE, _quarantine_rows(["b", "c"]))
    latest = catalog.version("quarantine")
    assert catalog.read("quarantine").num_rows == 3
    assert catalog.read("quarantine", version=latest - 1).num_rows == 1
    history = catalog.history("quarantine")
    assert [h["version"] for h in history][:2] == [latest, latest - 1]
    assert history[0]["egocurate.operation"] == "append"


def test_upsert_replaces_matching_keys_and_inserts_new(tmp_path):
    catalog = Catalog(tmp_path / "cat")
    catalog.append(tables.QUARANTINE, _quarantine_rows(["a", "b"]))
    changed = _quarantine_rows(["b", "z"])
    changed = changed.set_column(
        changed.schema.get_field_index("error_kind"), "error_kind", pa.array(["new", "new"])
    )
    catalog.upsert(tables.QUARANTINE, changed)
    rows = {r["uri"]: r["error_kind"] for r in catalog.read("quarantine").to_pylist()}
    assert rows == {"a": "x", "b": "new", "z": "new"}


def test_absent_table_reads_empty_with_schema(tmp_path):
    catalog = Catalog(tmp_path / "cat")
    empty = catalog.read("clips")
    assert empty.num_rows == 0 and empty.schema == tables.CLIPS.schema
    assert catalog.tables() == []
    assert catalog.version("clips") is None


def test_unknown_table_names_known_ones():
    with pytest.raises(KeyError, match="known tables"):
        tables.spec_for("nope")


def test_sql_and_clip_view_join_clips_with_videos(tmp_path):
    catalog = Catalog(tmp_path / "cat")
    catalog.append(
        tables.VIDEOS, pa.table({"video_id": ["v1", "v2"], "uri": ["/a.mp4", "/b.mp4"], "fps": [30.0, 10.0]})
    )
    catalog.append(
        tables.CLIPS,
        pa.table(
            {"clip_id": ["c1", "c2", "c3"], "video_id": ["v1", "v1", "v2"], "duration_s": [2.0, 3.0, 4.0]}
        ),
    )
    view = clip_view(catalog)
    assert view.column("clip_id").to_pylist() == ["c1", "c2", "c3"]
    assert view.column("uri").to_pylist() == ["/a.mp4", "/a.mp4", "/b.mp4"]
    assert view.column("video_fps").to_pylist() == [30.0, 30.0, 10.0]
    per_video = sql(catalog, "SELECT video_id, sum(duration_s) AS s FROM clip_view GROUP BY 1 ORDER BY 1")
    assert per_video.to_pylist() == [{"video_id": "v1", "s": 5.0}, {"video_id": "v2", "s": 4.0}]


def test_files_lists_current_version_only(tmp_path):
    catalog = Catalog(tmp_path / "cat")
    catalog.append(tables.QUARANTINE, _quarantine_rows(["a"]))
    catalog.upsert(tables.QUARANTINE, _quarantine_rows(["a"]))  # rewrites the file holding "a"
    files = catalog.files("quarantine")
    assert len(files) == 1 and all(f.endswith(".parquet") for f in files)
    assert catalog.count("quarantine") == 1


def test_vacuum_removes_orphan_parts_of_a_killed_run_and_keeps_data(tmp_path):
    catalog = Catalog(tmp_path / "cat")
    catalog.append(tables.QUARANTINE, _quarantine_rows(["kept"]))
    orphan = write_part(catalog.root, tables.QUARANTINE, _quarantine_rows(["never committed"]), "killed")
    orphan_path = tmp_path / "cat" / "quarantine" / orphan.path
    assert orphan_path.exists()
    assert catalog.vacuum("quarantine", retention_hours=168, dry_run=False) == []  # too young to touch
    with pytest.raises(VacuumRetentionError, match="running job"):  # it could be a live run's part
        catalog.vacuum("quarantine", retention_hours=0, dry_run=False)
    assert orphan_path.exists()
    week_ago = time.time() - 169 * 3600
    os.utime(orphan_path, (week_ago, week_ago))
    deleted = catalog.vacuum("quarantine", retention_hours=168, dry_run=False)
    assert [d.rsplit("/", 1)[-1] for d in deleted] == [orphan.path]
    assert not orphan_path.exists()
    assert catalog.read("quarantine").column("uri").to_pylist() == ["kept"]


def test_keyed_commit_keeps_every_row_one_input_yields_and_drops_what_another_writer_committed(tmp_path):
    """Idempotent by key: unique on the clip id and on the input (video) id, yet one video's many clips
    committed together all land; the same video's clips committed again (a racing writer) do not."""
    cat = Catalog(tmp_path / "cat")
    spec = tables.CLIPS
    cat.ensure(spec)
    rows = tables.conform(
        pa.table({"clip_id": ["c1", "c2", "c3"], "video_id": ["v1", "v1", "v1"], "start_frame": [0, 10, 20]}),
        spec,
    )
    unique = [("clip_id",), ("video_id",)]
    first = write_part(cat.root, spec, rows, "a")
    assert cat.commit_parts(spec, [first], unique=unique) is not None
    assert sorted(cat.read("clips").column("clip_id").to_pylist()) == ["c1", "c2", "c3"]
    again = write_part(cat.root, spec, rows, "b")  # the same work, finished by a second writer
    assert cat.commit_parts(spec, [again], unique=unique) is None
    assert cat.count("clips") == 3


def test_a_null_key_is_refused_naming_the_table_and_column(tmp_path):
    """A row with a null key could never be found, deduplicated or redone by key."""
    catalog = Catalog(tmp_path / "cat")
    rows = pa.table({"stage": ["ingest", "ingest"], "key": ["a", None]})
    with pytest.raises(NullKeyError, match="'_ledger'.*'key'"):
        catalog.append_unique(tables.LEDGER, rows, unique=[("key", "stage")])
    assert catalog.count("_ledger") == 0
