"""Issue 23: writers racing on one shard folder, and the leftovers of killed ones.

Whatever the timing, once every writer has exited the folder holds exactly the shard files the
published manifest lists (a glob-based loader reads no row twice), and the catalog's `shards` table
lists exactly those shards.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from egocurate.catalog.store import Catalog
from egocurate.shards.manifest import read_manifest
from egocurate.shards.write import ShardParams, write_shards
from egocurate.testing.catalog import build_sample_catalog

SMALL = dict(width=96, height=72, target_bytes=20_000, row_group_bytes=10_000, val_fraction=0.0)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Catalog:
    """3 videos x 3 clips: enough rendering that two writers overlap."""
    return build_sample_catalog(tmp_path_factory.mktemp("race_cat"), videos=3, seconds=3.2, clip_frames=24,
                                clip_step=12, tokenizer_latents=False)  # fmt: skip


def egocurate_cli() -> list[str]:
    exe = Path(sys.executable).with_name("egocurate")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "egocurate.cli.main"]


def start_writer(catalog: Catalog, out: Path, query: str) -> subprocess.Popen:
    args = ["shards", "write", "-c", catalog.root, "--out", str(out), "--width", "96", "--height", "72",
            "--target-mb", "0.02", "--row-group-mb", "0.01", "--val-fraction", "0.3", "--workers", "1",
            "--no-progress", "--query", query]  # fmt: skip
    return subprocess.Popen(
        [*egocurate_cli(), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def assert_folder_matches_manifest_and_table(catalog: Catalog, out: Path) -> None:
    manifest, _ = read_manifest(str(out))
    listed = {s.path for s in manifest.shards}
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert on_disk == listed | {"manifest.json"}, "every file in the folder is the manifest or a listed shard"
    rows = catalog.read("shards").to_pylist()
    mine = sorted(r["shard_uri"] for r in rows if r["shard_uri"].startswith(f"{out}/"))
    assert mine == sorted(s.url for s in manifest.shards), "the shards table lists exactly the manifest's"


def test_two_writers_at_once_leave_only_listed_shards(catalog, tmp_path):
    out = tmp_path / "race"
    queries = ["SELECT clip_id FROM clip_view", "SELECT clip_id FROM clip_view WHERE clip_index < 2"]
    for round_ in range(2):  # first into an empty folder, then over a published manifest
        procs = [start_writer(catalog, out, q) for q in queries]
        for proc in procs:
            output, _ = proc.communicate(timeout=240)
            assert proc.returncode == 0, f"round {round_}: {output}"
        assert_folder_matches_manifest_and_table(catalog, out)


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def leave(out: Path, run_id: str, host: str, pid: int, beat: float, partial: bool = True) -> list[Path]:
    """What a writer `run_id` leaves mid-write: its marker, a closed shard and a partial one."""
    (out / "train").mkdir(parents=True, exist_ok=True)
    marker = out / f".writer-{run_id}.json"
    marker.write_text(json.dumps({"run_id": run_id, "host": host, "pid": pid, "beat": beat}))
    files = [marker, out / "train" / f"shard-00000-{run_id}.parquet"]
    if partial:
        files.append(out / "train" / f"shard-00001-{run_id}.parquet.partial")
    for path in files[1:]:
        path.write_bytes(b"PAR1 half a shard")
    return files


def test_leftovers_of_killed_writers_go_and_live_writers_files_stay(catalog, tmp_path):
    out = tmp_path / "leftovers"
    first = write_shards(catalog, str(out), params=ShardParams(**SMALL), progress=False)
    host, now = socket.gethostname(), time.time()
    dead = leave(out, "deadbeef", host, dead_pid(), now)  # killed here: its pid is gone
    stale = leave(out, "01d0ff1c", "another-host", 1, now - 7 * 24 * 3600)  # no beat for a week
    live_here = leave(out, "0badcafe", host, os.getpid(), now)  # still writing on this host
    live_there = leave(out, "5eedf00d", "another-host", 1, now)  # still beating on another host
    second = write_shards(catalog, str(out), query="SELECT clip_id FROM clip_view WHERE clip_index = 0",
                          params=ShardParams(**SMALL), progress=False)  # fmt: skip
    assert not any(p.exists() for p in dead + stale)
    assert all(p.exists() for p in live_here + live_there)
    for path in live_here + live_there:
        path.unlink()
    assert_folder_matches_manifest_and_table(catalog, out)
    assert not {s.path for s in first.manifest.shards} & {s.path for s in second.manifest.shards}
