"""Synthetic robot footage with known actions, for IDM tests and the IDM benchmark.

A camera looks down on a textured table. An arm reaches in from the bottom edge to a two-finger
gripper. Each frame t the robot takes action a_t = (ee_dx, ee_dy, gripper): the end effector moves by
(ee_dx, ee_dy) centimetres between frame t and frame t+1, and the gripper is commanded closed (1) or
open (0), which frame t+1 shows. Actions are smooth (a velocity random walk with inertia, as
teleoperated arms move); the gripper toggles now and then. The camera jitters by a small random
offset every frame, which is not part of the action. Everything is deterministic in the seed; no
network and no data are needed.

:func:`write_robot_catalog` writes episodes as MP4 files plus the ``videos``, ``clips`` and
``episode_actions`` rows that a LeRobot ingest would write, so IDM training and labelling can be
tested without that ingest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog
from egocurate.media.encode import encode_mp4
from egocurate.testing.videos import _table_texture

ACTION_NAMES = ("ee_dx", "ee_dy", "gripper")
ACTION_UNITS = ("cm", "cm", "closed")
STATE_NAMES = ("ee_x", "ee_y", "gripper_closed")


@dataclass
class RobotEpisode:
    """Frames (N, H, W, 3) RGB uint8, actions (N, 3) and states (N, 3) float32, at `fps`."""

    frames: np.ndarray
    actions: np.ndarray
    states: np.ndarray
    fps: float
    seed: int


def _draw_robot(img: np.ndarray, ee: np.ndarray, base: np.ndarray, closed: bool, scale: float) -> None:
    """A grey two-link-looking arm from `base` to a dark gripper at `ee`, fingers open or closed."""
    s = scale
    cv2.line(
        img, tuple(int(v) for v in base), tuple(int(v) for v in ee), (90, 90, 100), int(10 * s), cv2.LINE_AA
    )
    cx, cy = int(ee[0]), int(ee[1])
    cv2.rectangle(
        img, (cx - int(9 * s), cy - int(5 * s)), (cx + int(9 * s), cy + int(5 * s)), (30, 30, 40), -1
    )
    gap = int((3 if closed else 9) * s)
    finger = (220, 60, 40) if closed else (40, 200, 60)  # colour says the state too, as LEDs on real grippers
    for side in (-1, 1):
        x = cx + side * gap
        cv2.rectangle(img, (x - int(2 * s), cy - int(16 * s)), (x + int(2 * s), cy - int(5 * s)), finger, -1)


def render_episode(
    seed: int,
    num_frames: int = 60,
    size: int = 128,
    fps: float = 10.0,
    jitter: float = 1.0,
    speed: float = 1.0,
    toggle_every: float = 25.0,
) -> RobotEpisode:
    """One episode of `num_frames` frames of `size`×`size` pixels.

    `speed` scales the end effector's pace (1.0: about 0.8 cm = 2.6 px/frame per axis at size 128,
    standard deviation); `jitter` is the camera shake in pixels (standard deviation per frame); the gripper
    toggles on average every `toggle_every` frames (and stays at least 5 frames in a state).
    """
    rng = np.random.default_rng(seed)
    scale = size / 128.0
    px_per_cm = 3.2 * scale
    margin = int(np.ceil(4 * jitter)) + 2
    canvas = _table_texture(rng, size + 2 * margin, size + 2 * margin)
    lo, hi = margin + 22 * scale, margin + size - 22 * scale
    ee = rng.uniform(lo + 10, hi - 10, size=2)
    base = np.array([margin + size * rng.uniform(0.3, 0.7), margin + size + 30 * scale])
    velocity = rng.normal(0, 0.8, size=2) * speed
    closed = bool(rng.integers(0, 2))
    dwell = 0
    camera = np.zeros(2)
    frames, actions, states = [], [], []
    for _ in range(num_frames):
        img = canvas.copy()
        _draw_robot(img, ee, base, closed, scale)
        ox, oy = int(round(margin + camera[0])), int(round(margin + camera[1]))
        frames.append(np.ascontiguousarray(img[oy : oy + size, ox : ox + size]))
        states.append([(ee[0] - margin) / px_per_cm, (ee[1] - margin) / px_per_cm, float(closed)])
        # the action taken at this frame
        velocity = 0.97 * velocity + rng.normal(0, 0.2 * speed, size=2)
        velocity = np.clip(velocity, -2.5 * speed, 2.5 * speed)
        step = velocity * px_per_cm
        for k in range(2):  # bounce off the reachable area so the action is the true displacement
            if not lo <= ee[k] + step[k] <= hi:
                velocity[k], step[k] = -velocity[k], -step[k]
        dwell += 1
        command = (not closed) if dwell >= 5 and rng.random() < 1.0 / toggle_every else closed
        if command != closed:
            dwell = 0
        actions.append([velocity[0], velocity[1], float(command)])
        ee = ee + step
        closed = command
        camera = np.clip(0.5 * camera + rng.normal(0, jitter, size=2), -margin + 1, margin - 1)
    return RobotEpisode(
        frames=np.stack(frames),
        actions=np.asarray(actions, np.float32),
        states=np.asarray(states, np.float32),
        fps=fps,
        seed=seed,
    )


def stable_id(*parts: object) -> str:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()[:16]


def episode_actions_row(video_id: str, episode: RobotEpisode, index: int, dataset_uri: str = "") -> dict:
    """An ``episode_actions`` row (float32 LE bytes + shape), as a LeRobot ingest writes it."""
    actions = np.ascontiguousarray(episode.actions, dtype="<f4")
    states = np.ascontiguousarray(episode.states, dtype="<f4")
    return {
        "video_id": video_id,
        "dataset_uri": dataset_uri,
        "episode_index": index,
        "camera": "observation.images.top",
        "fps": float(episode.fps),
        "num_frames": int(len(actions)),
        "actions": actions.tobytes(),
        "actions_shape": list(actions.shape),
        "action_names": list(ACTION_NAMES),
        "action_units": list(ACTION_UNITS),
        "states": states.tobytes(),
        "states_shape": list(states.shape),
        "state_names": list(STATE_NAMES),
        "source_format": "egocurate_synthetic_robot",
    }


def write_robot_catalog(
    root: str | Path,
    seeds: Sequence[int],
    num_frames: int = 60,
    size: int = 128,
    fps: float = 10.0,
    jitter: float = 1.0,
    clip_frames: int | None = None,
    with_actions: Sequence[bool] | None = None,
    catalog: Catalog | None = None,
) -> tuple[Catalog, list[dict]]:
    """Write one MP4 per seed under ``root/_media`` and its videos/clips/episode_actions rows.

    Each episode is cut into clips of `clip_frames` frames (None: one clip per episode). Episode i
    gets an ``episode_actions`` row unless ``with_actions[i]`` is False (unlabelled footage). Returns
    the catalog and per episode ``{video_id, uri, episode, clip_ids}``.
    """
    root = Path(root)
    media = root / "_media"
    media.mkdir(parents=True, exist_ok=True)
    catalog = catalog or Catalog(root / "catalog")
    videos, clips, actions, out = [], [], [], []
    for i, seed in enumerate(seeds):
        episode = render_episode(seed, num_frames=num_frames, size=size, fps=fps, jitter=jitter)
        path = media / f"robot_{seed:05d}.mp4"
        if not path.exists():
            path.write_bytes(encode_mp4(episode.frames, fps, crf=18))
        video_id = stable_id("robot", seed, num_frames, size)
        videos.append(
            {
                "video_id": video_id, "uri": str(path.resolve()), "source": "synthetic_robot",
                "dataset": "egocurate-robot", "bytes": path.stat().st_size, "duration_s": num_frames / fps,
                "fps": fps, "num_frames": num_frames, "width": size, "height": size, "codec": "h264",
                "rotation": 0, "has_audio": False,
            }
        )  # fmt: skip
        step = clip_frames or num_frames
        clip_ids = []
        for k, start in enumerate(range(0, num_frames - step + 1, step)):
            clip_id = stable_id("robot-clip", video_id, start, start + step)
            clip_ids.append(clip_id)
            clips.append(
                {
                    "clip_id": clip_id, "video_id": video_id, "clip_index": k, "start_frame": start,
                    "end_frame": start + step, "start_s": start / fps, "end_s": (start + step) / fps,
                    "duration_s": step / fps, "fps": fps, "num_frames": step, "split_method": "fixed",
                    "split_config": "robot", "width": size, "height": size,
                }
            )  # fmt: skip
        if with_actions is None or with_actions[i]:
            actions.append(episode_actions_row(video_id, episode, i, str(media)))
        out.append(
            {"video_id": video_id, "uri": str(path.resolve()), "episode": episode, "clip_ids": clip_ids}
        )
    catalog.append(tables.VIDEOS, pa.Table.from_pylist(videos))
    catalog.append(tables.CLIPS, pa.Table.from_pylist(clips))
    if actions:
        catalog.append(tables.EPISODE_ACTIONS, pa.Table.from_pylist(actions))
    return catalog, out
