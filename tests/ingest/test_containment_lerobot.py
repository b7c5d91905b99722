"""Issue 23: a LeRobot dataset's path templates never name a file outside the dataset folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from egocurate.cli.main import app
from egocurate.ingest.lerobot import LeRobotError, lerobot_episodes
from egocurate.testing.lerobot import CAMERAS, write_lerobot_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lerobot_contain") / "W" / "datasets" / "tiny_arm"
    write_lerobot_dataset(root, episodes=2, frames=6, cameras=CAMERAS[:1])
    return root


def with_info(dataset: Path, tmp_path: Path, **changes: object) -> Path:
    """A copy of the dataset's meta/ (the templates are all that matters) with info.json changed."""
    root = tmp_path / "W" / "datasets" / "copy"
    (root / "meta").mkdir(parents=True)
    for name in ("episodes.jsonl", "tasks.jsonl"):
        if (dataset / "meta" / name).exists():
            (root / "meta" / name).write_text((dataset / "meta" / name).read_text())
    info = json.loads((dataset / "meta" / "info.json").read_text())
    info.update(changes)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    return root


def test_default_templates_stay_inside(dataset):
    rows = lerobot_episodes(str(dataset))
    assert len(rows) == 2
    assert all(r["uri"].startswith(f"{dataset}/videos/") and r["actions_uri"].startswith(f"{dataset}/data/")
               for r in rows)  # fmt: skip


@pytest.mark.parametrize(
    "changes",
    [
        {"video_path": "../../../x/{video_key}.mp4"},
        {"video_path": "videos/../../{video_key}/episode_{episode_index:06d}.mp4"},
        {"video_path": "/abs/{video_key}/episode_{episode_index:06d}.mp4"},
        {"data_path": "../../../x/episode_{episode_index:06d}.parquet"},
        {"data_path": "s3://elsewhere/episode_{episode_index:06d}.parquet"},
    ],
)
def test_a_template_that_leaves_the_dataset_is_refused(dataset, tmp_path, changes):
    root = with_info(dataset, tmp_path, **changes)
    key = next(iter(changes))
    with pytest.raises(LeRobotError, match=f"{key} .*outside the dataset folder"):
        lerobot_episodes(str(root))


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"data_path": "data/episode_{episode_idx:06d}.parquet"}, "unknown placeholder {episode_idx}"),
        ({"data_path": "data/episode_{}.parquet"}, "unknown placeholder {}"),
        ({"video_path": "videos/{video_key:06d}.mp4"}, "video_path"),
        ({"data_path": "data/episode_{episode_index:06d.parquet"}, "data_path"),
        ({"data_path": 7}, "data_path"),
    ],
)
def test_a_broken_template_is_a_clear_error(dataset, tmp_path, changes, needle):
    root = with_info(dataset, tmp_path, **changes)
    with pytest.raises(LeRobotError, match="meta/info.json") as caught:
        lerobot_episodes(str(root))
    assert needle in str(caught.value)


def test_ingest_of_an_escaping_dataset_is_one_error_line(dataset, tmp_path):
    root = with_info(dataset, tmp_path, video_path="../../../x/{video_key}.mp4")
    done = CliRunner().invoke(app, ["ingest", str(root), "--catalog", str(tmp_path / "cat"), "--no-progress"])
    out = done.output.strip()
    assert done.exit_code == 2, out
    assert len(out.splitlines()) == 1 and out.startswith("error: LeRobot dataset"), out
    assert "video_path" in out and "outside the dataset folder" in out and "Traceback" not in out
