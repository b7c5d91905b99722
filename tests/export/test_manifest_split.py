"""A manifest `split` column (videos.split) is honoured by shards and both exports; hash otherwise."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from egocurate.catalog.selection import split_for, split_of
from egocurate.export.dreamdojo import export_dreamdojo
from egocurate.export.lerobot import export_lerobot
from egocurate.shards.write import ShardParams, write_shards
from egocurate.testing.catalog import build_sample_catalog


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """4 videos x 1 clip: sources say validation, test, nothing, train."""
    return build_sample_catalog(
        tmp_path_factory.mktemp("split_cat"), videos=4, seconds=1.6, clip_frames=24, clip_step=24,
        tokenizer_latents=False, splits=["validation", "test", None, "train"],
    )  # fmt: skip


def expected(catalog, val_fraction):
    videos = {r["video_id"]: r for r in catalog.read("videos").to_pylist()}
    out = {}
    for clip in catalog.read("clips").to_pylist():
        given = videos[clip["video_id"]]["split"]
        out[clip["clip_id"]] = (
            {"validation": "val"}.get(given, given) if given else split_of(clip["video_id"], val_fraction)
        )
    return out


def test_split_for_prefers_the_source():
    assert split_for({"split": " Validation ", "video_id": "v"}, 1.0) == "val"
    assert split_for({"split": "test", "video_id": "v"}, 0.0) == "test"
    assert split_for({"split": None, "video_id": "v"}, 1.0) == "val"  # hash split with everything in val
    assert split_for({"split": "", "clip_id": "c"}, 0.0) == "train"


def test_shards_follow_the_source_split(catalog, tmp_path):
    report = write_shards(
        catalog, str(tmp_path / "s"), params=ShardParams(width=160, height=120, val_fraction=1.0),
        progress=False, register=False,
    )  # fmt: skip
    want = expected(catalog, 1.0)
    assert set(want.values()) == {"val", "test", "train"}
    got = {}
    for shard in report.manifest.shards:
        table = pq.read_table(tmp_path / "s" / shard.path, columns=["clip_id", "split"])
        for row in table.to_pylist():
            assert row["split"] == shard.split
            got[row["clip_id"]] = row["split"]
    assert got == want
    assert {k: v["rows"] for k, v in report.manifest.splits.items() if v["rows"]} == {
        "val": 2, "test": 1, "train": 1
    }  # fmt: skip


def test_exports_record_and_order_by_the_source_split(catalog, tmp_path):
    want = expected(catalog, 0.0)
    export_dreamdojo(catalog, str(tmp_path / "mp4"), width=160, height=120, progress=False)
    index = pq.read_table(tmp_path / "mp4" / "clips.parquet").to_pylist()
    assert {r["clip_id"]: r["split"] for r in index} == want

    export_lerobot(catalog, str(tmp_path / "lr"), fps=15, width=160, height=120, progress=False)
    info = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())
    episodes = pq.read_table(tmp_path / "lr" / "meta" / "egocurate_episodes.parquet").to_pylist()
    assert {e["clip_id"]: e["split"] for e in episodes} == want
    assert info["splits"] == {"train": "0:2", "val": "2:3", "test": "3:4"}
    for name, span in info["splits"].items():
        lo, hi = map(int, span.split(":"))
        assert {e["split"] for e in episodes if lo <= e["episode_index"] < hi} == {name}
