"""Parts a killed run wrote but never committed are removed by the next run of the stage, and only those."""

from __future__ import annotations

import os
import time

import pyarrow as pa

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog, write_part
from egocurate.ingest.probe_stage import ProbeStage
from egocurate.jobs.driver import run_stage
from egocurate.jobs.runners.local import LocalEngine


def _orphan(catalog: Catalog, rows: pa.Table, age_s: float) -> str:
    """A real part written the way workers write them, never committed, `age_s` old."""
    part = write_part(catalog.root, tables.VIDEOS, rows, "killedrun")
    path = os.path.join(catalog.uri("videos"), part.path)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return part.path


def test_next_run_removes_old_orphans_keeps_fresh_ones_and_committed_files(tmp_path, sample_videos):
    catalog = Catalog(tmp_path / "cat")
    uris = pa.table({"uri": [str(p) for p in sample_videos]})
    run_stage(ProbeStage(), uris.slice(0, 2), catalog, LocalEngine(), progress=False)
    committed = {u.rsplit("/", 1)[-1] for u in catalog.files("videos")}
    rows = catalog.read("videos")
    old = _orphan(catalog, rows, age_s=2 * 3600)
    fresh = _orphan(catalog, rows, age_s=10)  # could belong to a run still going: must stay

    run_stage(ProbeStage(), uris, catalog, LocalEngine(), progress=False)

    on_disk = {n for n in os.listdir(catalog.uri("videos")) if n.endswith(".parquet")}
    assert old not in on_disk
    assert fresh in on_disk
    assert committed <= on_disk
    assert catalog.read("videos").num_rows == 3  # orphans were never visible, and still are not


def test_parts_some_version_added_or_removed_stay(tmp_path):
    """An overwrite removes files from the live version; time travel still needs them."""
    catalog = Catalog(tmp_path / "cat")
    catalog.replace(tables.VIDEOS, pa.table({"video_id": ["a"]}))
    before = {u.rsplit("/", 1)[-1] for u in catalog.files("videos")}
    catalog.replace(tables.VIDEOS, pa.table({"video_id": ["b"]}))
    for name in before:
        path = os.path.join(catalog.uri("videos"), name)
        os.utime(path, (time.time() - 10 * 3600,) * 2)
    assert catalog.remove_orphans("videos", older_than_s=60) == []
    assert catalog.read("videos", version=1).column("video_id").to_pylist() == ["a"]
