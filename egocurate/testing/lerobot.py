"""A tiny LeRobot v2.1 dataset on disk, in lerobot's real layout, with real H.264 videos.

The layout (paths, file names, feature keys, info.json fields) is ``egocurate.lerobot_layout``, the
one ingest reads and the export writes.

For tests of LeRobot ingest: several cameras, known actions and states per episode, and switches
that break one episode (its parquet missing, its action column too short) or the whole dataset
(``meta/info.json`` missing or not JSON).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from egocurate import lerobot_layout
from egocurate.lerobot_layout import (
    ACTION_KEY,
    EPISODES,
    EPISODES_STATS,
    INDEX_FEATURES,
    INFO,
    STATE_KEY,
    TASKS,
    data_file,
    jsonl,
    scalar_feature,
    vector_feature,
    video_feature,
    video_file,
)
from egocurate.media.encode import encode_mp4

CAMERAS = ("observation.images.top", "observation.images.wrist")


def actions_for(episode: int, frames: int, dim: int) -> np.ndarray:
    """Deterministic float32 actions; column 0 is the episode, column 1 the frame index."""
    rng = np.random.default_rng(1000 + episode)
    values = rng.normal(size=(frames, dim)).astype(np.float32)
    values[:, 0] = episode
    if dim > 1:
        values[:, 1] = np.arange(frames)
    return values


def states_for(episode: int, frames: int, dim: int) -> np.ndarray:
    return np.random.default_rng(2000 + episode).normal(size=(frames, dim)).astype(np.float32)


def _frames(episode: int, camera: int, frames: int, width: int, height: int) -> np.ndarray:
    """A square moving across a per-camera background (distinct bytes per episode and camera)."""
    out = np.zeros((frames, height, width, 3), dtype=np.uint8)
    out[..., camera % 3] = 60 + 40 * camera
    size = max(4, height // 4)
    for t in range(frames):
        x = (5 * t + 7 * episode) % max(1, width - size)
        y = (3 * t + 5 * episode + 11 * camera) % max(1, height - size)
        out[t, y : y + size, x : x + size] = (255, 255 - 20 * episode % 255, 40 * camera)
    return out


def write_lerobot_dataset(
    root: str | Path,
    episodes: int = 3,
    frames: int | Sequence[int] = 12,
    fps: int = 10,
    cameras: Sequence[str] = CAMERAS,
    action_dim: int = 3,
    state_dim: int = 4,
    width: int = 64,
    height: int = 48,
    tasks: Sequence[str] = ("pick the cube", "push the cube left"),
    missing_parquet: Sequence[int] = (),
    short_actions: Sequence[int] = (),
    info_json: str | None = None,
) -> dict:
    """Write a LeRobot v2.1 dataset under `root`; returns its truth (actions/states per episode).

    `missing_parquet` episodes get no data file, `short_actions` episodes one action row fewer than
    frames; `info_json` replaces the text of meta/info.json ("" leaves the file out).
    """
    root = Path(root)
    lengths = [frames] * episodes if isinstance(frames, int) else list(frames)
    truth: dict = {"actions": {}, "states": {}, "fps": fps, "cameras": list(cameras), "lengths": lengths}
    index = 0
    episode_rows, stats_rows = [], []
    for ep in range(episodes):
        n = lengths[ep]
        actions, states = actions_for(ep, n, action_dim), states_for(ep, n, state_dim)
        truth["actions"][ep], truth["states"][ep] = actions, states
        task = tasks[ep % len(tasks)]
        for c, camera in enumerate(cameras):
            path = root / video_file(ep, camera)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_mp4(_frames(ep, c, n, width, height), fps, crf=30))
        stored = actions[:-1] if ep in short_actions else actions
        rows = len(stored)
        table = pa.table(
            {
                ACTION_KEY: pa.FixedSizeListArray.from_arrays(pa.array(stored.ravel()), action_dim),
                STATE_KEY: pa.FixedSizeListArray.from_arrays(pa.array(states[:rows].ravel()), state_dim),
                "timestamp": pa.array(np.arange(rows, dtype=np.float32) / fps),
                "frame_index": pa.array(np.arange(rows, dtype=np.int64)),
                "episode_index": pa.array(np.full(rows, ep, dtype=np.int64)),
                "index": pa.array(np.arange(index, index + rows, dtype=np.int64)),
                "task_index": pa.array(np.full(rows, tasks.index(task), dtype=np.int64)),
            }
        )
        index += rows
        if ep not in missing_parquet:
            data = root / data_file(ep)
            data.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, data)
        episode_rows.append({"episode_index": ep, "tasks": [task], "length": n})
        stats_rows.append({"episode_index": ep, "stats": {}})
    action = vector_feature(action_dim, [f"joint_{i}" for i in range(action_dim)])
    action["units"] = ["rad"] * action_dim
    state = vector_feature(state_dim, None)
    state["names"] = {"motors": [f"motor_{i}" for i in range(state_dim)]}  # a dict, as some datasets do
    info = lerobot_layout.info_json(  # `info_json` here is the argument
        robot_type="tiny_arm",
        fps=fps,
        total_episodes=episodes,
        total_frames=sum(lengths),
        total_tasks=len(tasks),
        total_videos=episodes * len(cameras),
        splits={"train": f"0:{episodes}"},
        features={
            **{camera: video_feature(height, width, fps) for camera in cameras},
            ACTION_KEY: action,
            STATE_KEY: state,
            **{name: scalar_feature(dtype) for name, dtype in INDEX_FEATURES.items()},
        },
    )
    (root / INFO).parent.mkdir(parents=True, exist_ok=True)
    if info_json is None:
        (root / INFO).write_text(json.dumps(info, indent=4))
    elif info_json:
        (root / INFO).write_text(info_json)
    (root / EPISODES).write_text(jsonl(episode_rows))
    (root / TASKS).write_text(jsonl({"task_index": i, "task": t} for i, t in enumerate(tasks)))
    (root / EPISODES_STATS).write_text(jsonl(stats_rows))
    return truth


def add_action_sources(catalog, action_dim: int = 3) -> dict:  # noqa: ANN001 - a Catalog
    """Give a sample catalog (``testing.catalog.build_sample_catalog``) robot actions of two kinds.

    Video 0 gets recorded actions (``episode_actions``, one row per frame), video 1 becomes a
    generated rollout whose clips carry IDM pseudo-actions (``clip_idm_actions``, (T-1, A) float16);
    the others keep only their latent actions. Returns what was written, by video and clip id.
    """
    from egocurate.catalog import tables

    videos = sorted(catalog.read("videos").to_pylist(), key=lambda r: r["uri"])
    clips = catalog.read("clips").to_pylist()
    real_video, generated_video = videos[0], videos[1]
    real = actions_for(0, int(real_video["num_frames"]), action_dim)
    names = [f"joint_{i}" for i in range(action_dim)]
    catalog.append(
        tables.EPISODE_ACTIONS,
        pa.Table.from_pylist(
            [
                {
                    "video_id": real_video["video_id"],
                    "dataset_uri": "sample",
                    "episode_index": 0,
                    "camera": "observation.images.top",
                    "fps": real_video["fps"],
                    "num_frames": len(real),
                    "actions": real.astype("<f4").tobytes(),
                    "actions_shape": list(real.shape),
                    "action_names": names,
                    "source_format": "lerobot_v2.1",
                }
            ]
        ),
    )
    catalog.upsert(tables.VIDEOS, pa.Table.from_pylist([{**generated_video, "origin": "generated",
                                                          "generator": "sample-world-model"}]))  # fmt: skip
    idm = {}
    for clip in clips:
        if clip["video_id"] != generated_video["video_id"]:
            continue
        n = int(clip["end_frame"]) - int(clip["start_frame"])
        values = (np.arange((n - 1) * action_dim, dtype=np.float32).reshape(n - 1, action_dim) / 8).astype(
            "<f2"
        )
        idm[clip["clip_id"]] = values
    catalog.append(
        tables.CLIP_IDM_ACTIONS,
        pa.Table.from_pylist(
            [
                {
                    "clip_id": cid,
                    "video_id": generated_video["video_id"],
                    "idm_model_id": "idm-tiny",
                    "checkpoint_hash": "deadbeef",
                    "horizon": 4,
                    "actions": values.tobytes(),
                    "actions_shape": list(values.shape),
                    "action_names": names,
                }
                for cid, values in idm.items()
            ]
        ),
    )
    return {
        "real_video": real_video["video_id"],
        "real": real,
        "generated_video": generated_video["video_id"],
        "idm": idm,
        "names": names,
    }
