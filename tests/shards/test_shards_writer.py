"""Shard writer: rows, row groups, manifest, registry, video-hash split, atomicity under SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from egocurate.catalog.selection import split_of
from egocurate.media.encode import probe_mp4
from egocurate.shards.manifest import read_manifest
from egocurate.shards.write import SHARD_SCHEMA, ShardParams, write_shards
from egocurate.testing.catalog import build_sample_catalog, tokenizer_latent_for

SMALL = dict(width=160, height=120, target_bytes=40_000, row_group_bytes=20_000)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """3 videos x 48 frames at 15 fps, cut into 3 clips of 24 frames each (9 clips)."""
    return build_sample_catalog(
        tmp_path_factory.mktemp("shards_cat"), videos=3, seconds=3.2, clip_frames=24, clip_step=12
    )


@pytest.fixture(scope="module")
def written(catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards_out")
    return write_shards(catalog, str(out), params=ShardParams(val_fraction=0.4, **SMALL), progress=False), out


def all_rows(out: Path):
    manifest, base = read_manifest(str(out))
    rows = []
    for shard in manifest.shards:
        pf = pq.ParquetFile(f"{base}/{shard.path}")
        assert pf.schema_arrow == SHARD_SCHEMA
        assert [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)] == shard.row_groups
        assert pf.metadata.num_rows == shard.rows and Path(base, shard.path).stat().st_size == shard.bytes
        rows += pf.read().to_pylist()
    return manifest, rows


def test_shards_hold_every_clip_with_media_latents_labels(written, catalog):
    report, out = written
    manifest, rows = all_rows(out)
    assert report.skipped == {}
    assert len(manifest.shards) >= 3, "the target size should have split the set into several shards"
    assert any(len(s.row_groups) > 1 for s in manifest.shards), "row groups should be smaller than shards"
    clip_ids = {r["clip_id"] for r in catalog.read("clips", columns=["clip_id"]).to_pylist()}
    assert sorted(r["clip_id"] for r in rows) == sorted(clip_ids)
    latents = {r["clip_id"]: r for r in catalog.read("clip_latents").to_pylist()}
    for row in rows:
        media = probe_mp4(row["video"])
        assert (
            (media["width"], media["height"], media["num_frames"])
            == (160, 120, 24)
            == (row["width"], row["height"], row["num_frames"])
        )
        assert media["fps"] == pytest.approx(15.0) and row["fps"] == pytest.approx(15.0)
        assert row["latent_actions"] == latents[row["clip_id"]]["latent_actions"]
        assert row["latent_actions_shape"] == [23, 32] and row["latent_actions_alignment"] == "exact"
        clip_index = int(np.frombuffer(row["latent_actions"], "<f2")[0])
        latent = (np.frombuffer(row["latent"], "<u2").astype(np.uint32) << 16).view(np.float32)
        assert np.array_equal(latent.reshape(row["latent_shape"]), tokenizer_latent_for(clip_index))
        assert row["latent_dtype"] == "bfloat16" and row["tokenizer_id"] == "sample-tokenizer"
        assert row["task"] and row["caption"].startswith("a hand:") and row["source"] == "synthetic"


def test_split_by_video_hash_and_manifest_and_registry(written, catalog):
    report, out = written
    manifest, rows = all_rows(out)
    train = {r["video_id"] for r in rows if r["split"] == "train"}
    val = {r["video_id"] for r in rows if r["split"] == "val"}
    assert train and val and not train & val, "a source video must not land in both splits"
    assert all(r["split"] == split_of(r["video_id"], 0.4) for r in rows)
    data = json.loads((out / "manifest.json").read_text())
    tables_used = ("videos", "clips", "clip_labels", "clip_latents", "clip_tokenizer_latents")
    assert data["catalog_version"] == {name: catalog.version(name) for name in tables_used}
    assert "clip_view" in data["query"] and {f["name"] for f in data["schema"]} == set(SHARD_SCHEMA.names)
    assert {s: v["rows"] for s, v in data["splits"].items()} == {
        "train": sum(r["split"] == "train" for r in rows),
        "val": sum(r["split"] == "val" for r in rows),
    }
    registered = catalog.read("shards").to_pylist()
    assert sorted(r["shard_uri"] for r in registered) == sorted(s.url for s in manifest.shards)
    assert all(
        r["manifest_uri"] == report.manifest_url and json.loads(r["catalog_version"]) for r in registered
    )


def test_task_glob_and_frame_rate_resampling(catalog, tmp_path):
    report = write_shards(
        catalog,
        str(tmp_path),
        task="POUR*",
        register=False,
        progress=False,
        params=ShardParams(fps=10.0, val_fraction=0.0, **SMALL),
    )
    _, rows = all_rows(tmp_path)
    assert len(rows) == 3 and {r["task"] for r in rows} == {"pour water into the cup"}
    assert all(r["num_frames"] == 16 and probe_mp4(r["video"])["num_frames"] == 16 for r in rows)
    assert all(
        r["latent_actions_shape"] == [15, 32] and r["latent_actions_alignment"] == "nearest" for r in rows
    )
    short = write_shards(
        catalog,
        str(tmp_path / "short"),
        register=False,
        progress=False,
        params=ShardParams(fps=5.0, min_frames=13, **SMALL),
    )
    assert len(short.skipped) == 9 and "min_frames" in next(iter(short.skipped.values()))
    assert report.manifest.params["fps"] == 10.0


KILLED_WRITER = """
import sys
from egocurate.catalog.store import Catalog
from egocurate.shards.write import ShardParams, write_shards
write_shards(Catalog(sys.argv[1]), sys.argv[2], workers=1, progress=False, register=False,
             params=ShardParams(width=160, height=120, target_bytes=1, row_group_rows=1))
"""


def kill_mid_write(catalog_root: str, out: Path, before: set[Path]) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, catalog_root, str(out)])
    deadline = time.time() + 60
    while time.time() < deadline and not (set(out.rglob("shard-*")) - before):
        time.sleep(0.05)
    assert proc.poll() is None, "the writer finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_a_killed_writer_never_publishes_a_partial_shard(catalog, tmp_path):
    out = tmp_path / "atomic"
    out.mkdir()
    kill_mid_write(catalog.root, out, set())
    with pytest.raises(FileNotFoundError, match="no shard manifest"):
        read_manifest(str(out))
    # A complete write, then a second write killed half-way: the published manifest stays whole.
    report = write_shards(
        catalog, str(out), register=False, progress=False, params=ShardParams(val_fraction=0.0, **SMALL)
    )
    good = (out / "manifest.json").read_text()
    kill_mid_write(catalog.root, out, set(out.rglob("shard-*")))
    assert (out / "manifest.json").read_text() == good
    manifest, rows = all_rows(out)  # every listed shard opens and matches its row counts
    assert len(rows) == 9 and manifest.run_id == report.manifest.run_id
    assert not any(s.path.endswith(".partial") for s in manifest.shards)


def test_cli_shards_write(catalog, tmp_path):
    from egocurate.cli.main import app

    result = CliRunner().invoke(
        app,
        [
            "shards",
            "write",
            "--catalog",
            catalog.root,
            "--out",
            str(tmp_path),
            "--task",
            "open*",
            "--width",
            "160",
            "--height",
            "120",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest, rows = all_rows(tmp_path)
    assert len(rows) == 3 and all(r["task"] == "open the left drawer" for r in rows)
    assert "manifest:" in result.output
