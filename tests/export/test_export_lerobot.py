"""The LeRobot export validated against the v2.1 layout (meta, per-episode parquet, videos)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from egocurate.export.lerobot import export_lerobot
from egocurate.testing.catalog import build_sample_catalog

DEFAULT_FEATURES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}
INFO_KEYS = {
    "codebase_version",
    "robot_type",
    "total_episodes",
    "total_frames",
    "total_tasks",
    "total_videos",
    "total_chunks",
    "chunks_size",
    "fps",
    "splits",
    "data_path",
    "video_path",
    "features",
}
ARROW = {"float32": pa.float32(), "int64": pa.int64()}


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def validate_v21(root: Path) -> dict:
    """Check a dataset folder against LeRobot's v2.1 layout; returns info.json."""
    meta = root / "meta"
    for name in (
        "info.json",
        "episodes.jsonl",
        "tasks.jsonl",
        "episodes_stats.jsonl",
        "stats.json",
        "modality.json",
    ):
        assert (meta / name).is_file(), f"missing meta/{name}"
    info = json.loads((meta / "info.json").read_text())
    assert set(info) >= INFO_KEYS and info["codebase_version"] == "v2.1"
    features = info["features"]
    for name, dtype in DEFAULT_FEATURES.items():
        assert features[name]["dtype"] == dtype and features[name]["shape"] == [1]
    for name, feat in features.items():
        assert {"dtype", "shape", "names"} <= set(feat) and isinstance(feat["shape"], list), name
    videos = {k: f for k, f in features.items() if f["dtype"] == "video"}
    assert videos and info["total_videos"] == info["total_episodes"] * len(videos)
    for feat in videos.values():
        h, w, c = feat["shape"]
        assert feat["info"]["video.fps"] == info["fps"] and (
            feat["info"]["video.height"],
            feat["info"]["video.width"],
            c,
        ) == (h, w, 3)
    episodes, tasks = jsonl(meta / "episodes.jsonl"), jsonl(meta / "tasks.jsonl")
    task_text = {t["task_index"]: t["task"] for t in tasks}
    assert sorted(task_text) == list(range(len(tasks))) == list(range(info["total_tasks"]))
    assert [e["episode_index"] for e in episodes] == list(range(info["total_episodes"]))
    assert sum(e["length"] for e in episodes) == info["total_frames"]
    assert info["total_chunks"] == -(-len(episodes) // info["chunks_size"])
    spans = sorted(tuple(map(int, v.split(":"))) for v in info["splits"].values())
    assert (
        spans[0][0] == 0
        and spans[-1][1] == len(episodes)
        and all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    )
    stats = {s["episode_index"]: s["stats"] for s in jsonl(meta / "episodes_stats.jsonl")}
    assert sorted(stats) == list(range(len(episodes)))
    data_features = {k: f for k, f in features.items() if f["dtype"] != "video"}
    index = 0
    for ep in episodes:
        e, n = ep["episode_index"], ep["length"]
        chunk = e // info["chunks_size"]
        table = pq.read_table(root / info["data_path"].format(episode_chunk=chunk, episode_index=e))
        assert set(table.column_names) == set(data_features) and table.num_rows == n
        for name, feat in data_features.items():
            col_type = table.schema.field(name).type
            if feat["shape"] == [1]:
                assert col_type == ARROW[feat["dtype"]], name
            else:
                assert pa.types.is_fixed_size_list(col_type) and col_type.list_size == feat["shape"][0]
                assert col_type.value_type == ARROW[feat["dtype"]]
        cols = table.to_pydict()
        assert cols["frame_index"] == list(range(n)) and cols["episode_index"] == [e] * n
        assert cols["index"] == list(range(index, index + n))
        assert np.allclose(cols["timestamp"], np.arange(n) / info["fps"], atol=1e-4)
        assert {task_text[t] for t in cols["task_index"]} == set(ep["tasks"])
        for key in videos:
            with av.open(
                str(root / info["video_path"].format(episode_chunk=chunk, video_key=key, episode_index=e))
            ) as c:
                stream = c.streams.video[0]
                frames = sum(1 for _ in c.decode(stream))
                size = [stream.codec_context.height, stream.codec_context.width]
            assert frames == n and size == videos[key]["shape"][:2]
            assert np.array(stats[e][key]["mean"]).shape == (3, 1, 1)
        for name, feat in data_features.items():
            assert {"min", "max", "mean", "std", "count"} <= set(stats[e][name])
            assert len(stats[e][name]["mean"]) == feat["shape"][0]
        index += n
    modality = json.loads((meta / "modality.json").read_text())
    for part in modality["action"].values():
        assert 0 <= part["start"] < part["end"] <= features["action"]["shape"][0]
    assert all(v["original_key"] in features for v in modality["video"].values())
    assert all(v["original_key"] in data_features for v in modality["annotation"].values())
    assert (
        len(json.loads((meta / "stats.json").read_text())["action"]["mean"]) == features["action"]["shape"][0]
    )
    return info


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return build_sample_catalog(
        tmp_path_factory.mktemp("lerobot_cat"),
        videos=3,
        seconds=2.0,
        clip_frames=20,
        clip_step=10,
        tokenizer_latents=False,
    )


def test_lerobot_export_validates_and_carries_latent_actions(catalog, tmp_path):
    out = tmp_path / "lerobot"
    report = export_lerobot(
        catalog, str(out), fps=15, width=160, height=120, val_fraction=0.4, progress=False
    )
    assert report.skipped == {} and report.written == 6
    info = validate_v21(out)
    assert info["fps"] == 15 and info["total_episodes"] == 6 and info["total_frames"] == 6 * 20
    assert "val" in info["splits"]
    sidecar = pq.read_table(out / "meta" / "egocurate_episodes.parquet").to_pylist()
    latents = {r["clip_id"]: r for r in catalog.read("clip_latents").to_pylist()}
    for row in sidecar:
        assert row["latent_actions_alignment"] == "exact"
        data = pq.read_table(out / f"data/chunk-000/episode_{row['episode_index']:06d}.parquet")
        action = np.array(data.column("action").to_pylist(), dtype=np.float32)
        expected = np.frombuffer(latents[row["clip_id"]]["latent_actions"], "<f2").reshape(19, 32)
        assert np.array_equal(action[:19], expected.astype(np.float32)) and not action[19].any()


def test_cli_export_lerobot_with_task_glob(catalog, tmp_path):
    from egocurate.cli.main import app

    out = tmp_path / "pour"
    args = [
        "export",
        "lerobot",
        "-c",
        catalog.root,
        "--out",
        str(out),
        "--task",
        "pour*",
        "--width",
        "160",
        "--height",
        "120",
        "--no-progress",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    info = validate_v21(out)
    assert info["fps"] == 10 and info["total_episodes"] == 2 and info["total_tasks"] == 1
    assert [t["task"] for t in jsonl(out / "meta" / "tasks.jsonl")] == ["pour water into the cup"]
    assert all(e["length"] == 13 for e in jsonl(out / "meta" / "episodes.jsonl"))
    again = CliRunner().invoke(app, ["export", "lerobot", "-c", catalog.root, "--out", str(tmp_path)])
    assert again.exit_code == 2 and "not empty" in " ".join(again.output.split())


def test_demo_exports_write_shards_and_both_exports(catalog, tmp_path):
    from egocurate.cli.demo import demo_exports

    paths = demo_exports(catalog, tmp_path)
    assert Path(paths["shards"]).is_file() and "6 episodes" in paths["lerobot"]
    # Rendered at the latent-action model's rate (stride 1: 15 fps), as the shards are: 20 frames each.
    assert "6 clips, 0 left out" in paths["dreamdojo"]
    assert validate_v21(tmp_path / "lerobot_export")["total_episodes"] == 6
    manifest = json.loads(Path(paths["shards"]).read_text())
    assert manifest["splits"]["train"]["rows"] + manifest["splits"]["val"]["rows"] == 6
