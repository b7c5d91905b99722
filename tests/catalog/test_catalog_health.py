"""`catalog check` finds each injected fault; after `catalog repair` it is clean and nothing good is lost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog
from egocurate.jobs.pipeline import ingest


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "egocurate.cli.main", *args], capture_output=True, text=True)


def _clip_rows(ids: list[str], video_id: str) -> pa.Table:
    return pa.table({"clip_id": ids, "video_id": [video_id] * len(ids), "start_frame": [0] * len(ids)})


def test_check_finds_each_fault_and_repair_fixes_it_without_losing_good_rows(tmp_path, sample_videos):
    root = str(tmp_path / "catalog")
    ingest([str(p) for p in sample_videos], root, progress=False)
    cat = Catalog(root)
    assert _cli("catalog", "check", "-c", root).returncode == 0

    good_videos = sorted(cat.read("videos").column("video_id").to_pylist())
    # 1. duplicate keys: a racing writer's second copy of a row.
    cat.append(tables.VIDEOS, cat.read("videos").slice(0, 1))
    # 2. schema drift: a MERGE writes string_view files.
    extra = cat.read("videos").slice(0, 1).to_pylist()[0] | {"video_id": "feedfeedfeedfeed"}
    DeltaTable(cat.uri("videos")).merge(
        source=pa.Table.from_pylist([extra], schema=tables.VIDEOS.schema),
        predicate="t.video_id = s.video_id", source_alias="s", target_alias="t",
    ).when_not_matched_insert_all().execute()  # fmt: skip
    good_videos = sorted([*good_videos, "feedfeedfeedfeed"])
    # 3. a ledger row that claims output the stage's table does not hold.
    ledger = cat.read("_ledger").slice(0, 1).to_pylist()[0] | {"key": "/nowhere/lost.mp4", "rows_out": 1}
    cat.append(tables.LEDGER, pa.Table.from_pylist([ledger], schema=tables.LEDGER.schema))
    # 4. a truncated last log entry: version 2 of `clips` is half written.
    cat.append(tables.CLIPS, _clip_rows(["c1", "c2"], good_videos[0]))
    cat.append(tables.CLIPS, _clip_rows(["c3"], good_videos[0]))
    last = Path(root) / "clips" / "_delta_log" / f"{cat.version('clips'):020d}.json"
    last.write_bytes(last.read_bytes()[:40])

    found = _cli("catalog", "check", "-c", root)
    assert found.returncode == 1, found.stdout + found.stderr
    for line in ("videos: duplicate_keys", "videos: schema_drift", "clips: damaged_log",
                 "_ledger: ledger_missing_output"):  # fmt: skip
        assert line in found.stdout, found.stdout

    fixed = _cli("catalog", "repair", "-c", root)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    clean = _cli("catalog", "check", "-c", root)
    assert clean.returncode == 0, clean.stdout
    cat = Catalog(root)
    videos = cat.read("videos")
    assert sorted(videos.column("video_id").to_pylist()) == good_videos  # one row per key, none lost
    assert not any(pa.types.is_string_view(f.type) for f in videos.schema)
    assert sorted(cat.read("clips").column("clip_id").to_pylist()) == ["c1", "c2"]  # the last good version
    assert "/nowhere/lost.mp4" not in cat.read("_ledger").column("key").to_pylist()
    assert len(cat.read("_ledger").column("key").to_pylist()) == len(sample_videos)
    assert any(h.get("egocurate.operation") == "repair" for h in cat.history("videos"))
    assert any(h.get("egocurate.operation") == "repair" for h in cat.history("clips"))
    assert (
        _cli(
            "catalog", "sql", "select * from videos where video_id='feedfeedfeedfeed'", "-c", root
        ).returncode
        == 0
    )
