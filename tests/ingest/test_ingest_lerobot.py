"""LeRobot v2.1 datasets as a source: episodes become videos, actions land in `episode_actions`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog
from egocurate.cli.main import app
from egocurate.ingest.discover import discover
from egocurate.ingest.episode_actions_stage import decode_episode_array
from egocurate.jobs.pipeline import ingest
from egocurate.testing.lerobot import CAMERAS, write_lerobot_dataset

FRAMES = [8, 9, 8, 10, 6]  # per episode; 1 loses its parquet, 2 one action row, 4 its action column


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("lerobot") / "tiny_arm"
    truth = write_lerobot_dataset(root, episodes=5, frames=FRAMES, missing_parquet=[1], short_actions=[2])
    data = root / "data" / "chunk-000" / "episode_000004.parquet"
    pq.write_table(pq.read_table(data).drop_columns(["action"]), data)
    return root, truth


def _ingest(*args: str) -> None:
    result = CliRunner().invoke(app, ["ingest", *args, "--no-progress"])
    assert result.exit_code == 0, result.output


def test_episodes_actions_states_fps_and_bad_episodes_quarantined(dataset, tmp_path):
    root, truth = dataset
    catalog_dir = tmp_path / "cat"
    _ingest(str(root), "--catalog", str(catalog_dir))
    catalog = Catalog(catalog_dir, create=False)
    videos = {r["episode_index"]: r for r in catalog.read("videos").to_pylist()}
    assert sorted(videos) == [0, 3, 4]  # the two broken episodes are quarantined, the rest ingest
    for index, row in videos.items():
        assert row["camera"] == CAMERAS[0]  # no --camera: the first video key
        assert f"/{CAMERAS[0]}/episode_{index:06d}.mp4" in row["uri"]
        assert row["fps"] == 10 and row["num_frames"] == FRAMES[index] and row["origin"] == "real"
        assert row["dataset"] == "tiny_arm" and row["task_text"] in ("pick the cube", "push the cube left")
    quarantine = {r["uri"].rsplit("_", 1)[-1][:6]: r for r in catalog.read("quarantine").to_pylist()}
    assert quarantine["000001"]["error_kind"] == "missing_actions"
    assert "episode_000001.parquet not found" in quarantine["000001"]["message"]
    assert quarantine["000002"]["error_kind"] == "action_length_mismatch"
    assert (
        "7 action rows but the observation.images.top video has 8 frames" in quarantine["000002"]["message"]
    )

    (no_column,) = [r for r in quarantine.values() if r["stage"] == "episode_actions"]
    assert no_column["error_kind"] == "missing_actions" and no_column["key"] == videos[4]["video_id"]
    assert no_column["message"].startswith(
        f"{root}/data/chunk-000/episode_000004.parquet has no 'action' column"
    )
    actions = {r["episode_index"]: r for r in catalog.read("episode_actions").to_pylist()}
    assert sorted(actions) == [0, 3]
    for index, row in actions.items():
        assert row["video_id"] == videos[index]["video_id"]
        assert np.array_equal(
            decode_episode_array(row["actions"], row["actions_shape"]), truth["actions"][index]
        )
        assert np.array_equal(
            decode_episode_array(row["states"], row["states_shape"]), truth["states"][index]
        )
        assert row["action_names"] == ["joint_0", "joint_1", "joint_2"] and row["action_units"] == ["rad"] * 3
        assert row["state_names"] == [f"motor_{i}" for i in range(4)]
        assert (row["fps"], row["num_frames"], row["camera"]) == (10.0, FRAMES[index], CAMERAS[0])
        assert row["source_format"] == "lerobot_v2.1" and row["dataset_uri"] == str(root)

    versions = {name: catalog.version(name) for name in ("videos", "episode_actions", "quarantine")}
    _ingest(str(root), "--catalog", str(catalog_dir))  # a re-ingest adds nothing
    assert {name: catalog.version(name) for name in versions} == versions
    assert catalog.count("episode_actions") == 2 and catalog.count("videos") == 3


def test_camera_option_picks_the_video_key(dataset, tmp_path):
    root, _ = dataset
    _ingest(str(root), "--catalog", str(tmp_path / "cat"), "--camera", CAMERAS[1])
    catalog = Catalog(tmp_path / "cat", create=False)
    rows = catalog.read("videos").to_pylist()
    assert len(rows) == 3 and all(f"/{CAMERAS[1]}/" in r["uri"] and r["camera"] == CAMERAS[1] for r in rows)
    assert set(catalog.read("episode_actions").column("camera").to_pylist()) == {CAMERAS[1]}


@pytest.mark.parametrize(
    ("info", "needle"),
    [("", "meta/info.json is missing"), ("{not json", "meta/info.json is not valid JSON")],
)
def test_missing_or_broken_info_json_is_one_error_line(tmp_path, info, needle):
    root = tmp_path / "broken"
    write_lerobot_dataset(root, episodes=1, frames=4, cameras=CAMERAS[:1], info_json=info)
    done = CliRunner().invoke(app, ["ingest", str(root), "--catalog", str(tmp_path / "cat"), "--no-progress"])
    out = done.output.strip()
    assert done.exit_code == 2, out
    assert out.splitlines() == [f"error: LeRobot dataset {root}: {needle}" + out.split(needle, 1)[1]], out
    assert "Traceback" not in out


def test_unknown_camera_names_the_cameras(dataset, tmp_path):
    root, _ = dataset
    result = CliRunner().invoke(
        app, ["ingest", str(root), "--catalog", str(tmp_path / "c"), "--camera", "nope"]
    )
    assert result.exit_code == 2
    assert "no camera 'nope'; cameras: observation.images.top, observation.images.wrist" in result.output


def test_info_json_names_and_units_helpers():
    from egocurate.ingest.lerobot import feature_names, feature_units

    info = {"features": {"action": {"shape": [2], "names": {"motors": ["a", "b"]}, "unit": "m"}}}
    assert feature_names(info, "action") == ["a", "b"] and feature_units(info, "action") == ["m", "m"]
    assert json.dumps(tables.EPISODE_ACTIONS.columns)  # the shared schema is what the stage writes


def test_pipeline_file_source_with_camera_key(dataset, tmp_path):
    root, _ = dataset
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"catalog: cat\nsources: [{root}]\ncamera: {CAMERAS[1]}\nprogress: false\n")
    result = CliRunner().invoke(app, ["run", str(pipeline)])
    assert result.exit_code == 0, result.output
    catalog = Catalog(tmp_path / "cat", create=False)  # episode_actions ran after ingest on its own
    assert set(catalog.read("episode_actions").column("camera").to_pylist()) == {CAMERAS[1]}
    assert catalog.count("episode_actions") == 2


def test_a_folder_holding_a_dataset_reads_it_as_a_dataset(dataset, tmp_path):
    root, _ = dataset
    parent = tmp_path / "robots"
    shutil.copytree(root, parent / "tiny_arm")
    loose = parent / "loose.mp4"
    shutil.copy(next(root.rglob("episode_000000.mp4")), loose)
    rows = discover([str(parent)]).to_pylist()
    plain = [r for r in rows if r["actions_uri"] is None]
    assert [r["uri"] for r in plain] == [str(loose)]  # no loose MP4s of the dataset's other camera
    assert sorted(r["episode_index"] for r in rows if r["actions_uri"]) == [0, 1, 2, 3, 4]
    assert {r["camera"] for r in rows if r["actions_uri"]} == {CAMERAS[0]}
    _ingest(str(parent), "--catalog", str(tmp_path / "cat"))
    catalog = Catalog(tmp_path / "cat", create=False)
    assert sorted(catalog.read("episode_actions").column("episode_index").to_pylist()) == [0, 3]


def test_dataset_at_an_fsspec_url(dataset, tmp_path):
    root, truth = dataset
    memory = fsspec.filesystem("memory")
    base = f"/lerobot-{tmp_path.name}/tiny_arm"
    for path in root.rglob("*"):
        if path.is_file():
            memory.pipe(f"{base}/{path.relative_to(root).as_posix()}", path.read_bytes())
    try:
        ingest([f"memory://{base}"], str(tmp_path / "cat"), progress=False)
        catalog = Catalog(tmp_path / "cat", create=False)
        rows = {r["episode_index"]: r for r in catalog.read("episode_actions").to_pylist()}
        assert sorted(rows) == [0, 3] and rows[0]["dataset_uri"] == f"memory://{base}"
        assert np.array_equal(
            decode_episode_array(rows[3]["actions"], rows[3]["actions_shape"]), truth["actions"][3]
        )
        assert all(
            u.startswith(f"memory://{base}/videos/") for u in catalog.read("videos").column("uri").to_pylist()
        )
    finally:
        memory.rm(base.split("/tiny_arm")[0], recursive=True)
