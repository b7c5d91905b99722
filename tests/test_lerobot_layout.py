"""The one LeRobot layout: what the writers name is what the reader finds, in every chunk folder."""

from __future__ import annotations

import json

from egocurate import lerobot_layout as layout
from egocurate.ingest.lerobot import lerobot_episodes


def test_reader_finds_the_files_the_writer_names_in_every_chunk(tmp_path):
    chunks_size, episodes = 2, 5
    info = layout.info_json(
        robot_type="arm", fps=10, total_episodes=episodes, total_frames=10 * episodes, total_tasks=1,
        total_videos=episodes, splits={"train": f"0:{episodes}"}, chunks_size=chunks_size,
        features={"cam": layout.video_feature(48, 64, 10), layout.ACTION_KEY: layout.vector_feature(2, None)},
    )  # fmt: skip
    (tmp_path / layout.INFO).parent.mkdir(parents=True)
    (tmp_path / layout.INFO).write_text(json.dumps(info))
    (tmp_path / layout.EPISODES).write_text(
        layout.jsonl({"episode_index": i, "tasks": ["t"], "length": 10} for i in range(episodes))
    )

    rows = lerobot_episodes(str(tmp_path))

    assert info["total_chunks"] == 3
    assert [r["uri"] for r in rows] == [
        f"{tmp_path}/{layout.video_file(i, 'cam', chunks_size)}" for i in range(5)
    ]
    assert [r["actions_uri"] for r in rows] == [
        f"{tmp_path}/{layout.data_file(i, chunks_size)}" for i in range(5)
    ]
    assert rows[4]["uri"] == f"{tmp_path}/videos/chunk-002/cam/episode_000004.mp4"
    assert rows[4]["actions_uri"] == f"{tmp_path}/data/chunk-002/episode_000004.parquet"
