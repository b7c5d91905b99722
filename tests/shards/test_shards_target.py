"""`shards write` never writes into someone else's folder and leaves no orphan shards of its own."""

from __future__ import annotations

import subprocess
import sys

import pytest

from egocurate.shards.manifest import read_manifest
from egocurate.shards.write import ShardParams, ShardTargetError, write_shards
from egocurate.testing.catalog import build_sample_catalog

SMALL = dict(width=96, height=72, target_bytes=20_000, row_group_bytes=10_000, val_fraction=0.0)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return build_sample_catalog(tmp_path_factory.mktemp("target_cat"), videos=2, seconds=3.2, clip_frames=24,
                                clip_step=12, tokenizer_latents=False)  # fmt: skip


def test_a_foreign_non_empty_folder_is_refused_and_left_alone(catalog, tmp_path):
    raw = tmp_path / "raw_videos"
    raw.mkdir()
    (raw / "take_001.mp4").write_bytes(b"someone else's footage")
    with pytest.raises(ShardTargetError, match="holds no shard manifest"):
        write_shards(catalog, str(raw), params=ShardParams(**SMALL), progress=False, register=False)
    done = subprocess.run([sys.executable, "-m", "egocurate.cli.main", "shards", "write", "-c", catalog.root,
                           "--out", str(raw), "--no-progress"], capture_output=True, text=True)  # fmt: skip
    message = done.stderr or done.stdout  # user errors print one line (on stderr, or stdout before)
    assert done.returncode == 2 and message.startswith("error: ") and "no shard manifest" in message
    assert sorted(p.name for p in raw.rglob("*")) == ["take_001.mp4"]


def test_a_rerun_removes_only_the_shards_its_previous_manifest_listed(catalog, tmp_path):
    out = tmp_path / "shards"
    first = write_shards(catalog, str(out), params=ShardParams(**SMALL), progress=False, register=False)
    old = {s.path for s in first.manifest.shards}
    assert len(old) > 1
    (out / "NOTES.txt").write_text("a note a person left here")
    second = write_shards(catalog, str(out), query="SELECT clip_id FROM clip_view WHERE clip_index = 0",
                          params=ShardParams(**SMALL), progress=False, register=False)  # fmt: skip
    manifest, _ = read_manifest(str(out))
    assert manifest.run_id == second.manifest.run_id
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*.parquet")}
    assert on_disk == {s.path for s in manifest.shards}  # a glob-based loader counts nothing twice
    assert not (on_disk & old)
    assert (out / "NOTES.txt").read_text() == "a note a person left here"  # not listed: not ours to delete
