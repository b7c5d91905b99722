"""A LeRobot v2.1 dataset written by our own exporter ingests back: episodes, actions and fps exactly."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from egocurate.catalog.store import Catalog
from egocurate.export.lerobot import VIDEO_KEY, export_lerobot
from egocurate.ingest.episode_actions_stage import decode_episode_array
from egocurate.jobs.pipeline import ingest
from egocurate.testing.catalog import build_sample_catalog


def test_export_then_ingest_round_trips_episodes_actions_and_fps(tmp_path):
    source = build_sample_catalog(tmp_path / "src", videos=2, seconds=2.0, fps=15.0, clip_frames=20,
                                  clip_step=10, tokenizer_latents=False)  # fmt: skip
    out = tmp_path / "exported"
    report = export_lerobot(source, str(out), fps=15, width=64, height=48, progress=False)
    assert report.written == source.count("clips") == 4
    info = json.loads((out / "meta" / "info.json").read_text())
    exported = {}
    for line in (out / "meta" / "episodes.jsonl").read_text().splitlines():
        episode = json.loads(line)
        data = pq.read_table(out / info["data_path"].format(episode_chunk=0, **episode))
        exported[episode["episode_index"]] = np.asarray(data.column("action").to_pylist(), dtype=np.float32)

    ingest([str(out)], str(tmp_path / "back"), progress=False)
    back = Catalog(tmp_path / "back", create=False)
    videos = {r["video_id"]: r for r in back.read("videos").to_pylist()}
    rows = back.read("episode_actions").to_pylist()
    assert back.count("quarantine") == 0
    assert sorted(r["episode_index"] for r in rows) == sorted(exported) == list(range(4))
    for row in rows:
        video = videos[row["video_id"]]
        actions = decode_episode_array(row["actions"], row["actions_shape"])
        assert np.array_equal(actions, exported[row["episode_index"]])  # bit for bit
        assert actions.shape == (20, 32) and row["action_names"] == [f"latent_{i}" for i in range(32)]
        assert row["fps"] == video["fps"] == info["fps"] == 15
        assert row["num_frames"] == video["num_frames"] == 20 and row["camera"] == VIDEO_KEY
        assert row["states"] is None and video["origin"] == "real"
