"""The LeRobot v2.x dataset layout, defined once for its reader, its writer and the test writer.

``ingest.lerobot`` reads datasets in this layout, ``export.lerobot`` writes one, and
``testing.lerobot`` writes small ones for tests; all three take the file names, path templates,
chunking, feature keys and ``meta/info.json`` fields from here, so they cannot drift apart::

    meta/info.json              codebase_version, features, data_path / video_path templates, fps
    meta/episodes.jsonl         {"episode_index", "tasks", "length"} per episode
    meta/episodes_stats.jsonl   per-episode feature statistics (v2.1)
    meta/tasks.jsonl            {"task_index", "task"}
    meta/stats.json             dataset statistics per feature
    data/chunk-000/episode_000000.parquet
    videos/chunk-000/<video_key>/episode_000000.mp4

It is a base module (like ``storage``): it imports nothing of egocurate, and every room may import
it. The path templates of a dataset being read come from its own ``meta/info.json``, so they are
checked here too: a template that names a placeholder lerobot does not fill, or a file outside the
dataset folder (``../``, an absolute path, a URL), raises :class:`LeRobotError` (a user error, one
line).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CODEBASE_VERSION = "v2.1"  # what the export writes
SUPPORTED_VERSIONS = ("v2.0", "v2.1")  # what ingest reads

INFO = "meta/info.json"
EPISODES = "meta/episodes.jsonl"
EPISODES_STATS = "meta/episodes_stats.jsonl"
TASKS = "meta/tasks.jsonl"
STATS = "meta/stats.json"

DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
TEMPLATE_FIELDS = ("episode_chunk", "episode_index", "video_key")
TEMPLATES = {"data_path": DATA_PATH, "video_path": VIDEO_PATH}
CHUNKS_SIZE = 1000  # episodes per chunk folder (lerobot's default)

ACTION_KEY = "action"
STATE_KEY = "observation.state"
# The per-frame index columns every episode's data file has, and their dtypes.
INDEX_FEATURES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}


class LeRobotError(ValueError):
    """A LeRobot dataset that cannot be read as a whole (missing or broken meta/info.json)."""


def episode_fields(episode_index: int, chunks_size: int = CHUNKS_SIZE, video_key: str = "") -> dict[str, Any]:
    """The values of :data:`TEMPLATE_FIELDS` for one episode (its chunk is ``index // chunks_size``)."""
    return {
        "episode_chunk": episode_index // chunks_size,
        "episode_index": episode_index,
        "video_key": video_key,
    }


def checked_template(root: str, info: Mapping[str, Any], key: str) -> str:
    """``info[key]`` (``data_path`` or ``video_path``; the default when absent), checked to format
    with :data:`TEMPLATE_FIELDS` alone."""
    template = info.get(key) or TEMPLATES[key]
    where = f"LeRobot dataset {root}: {INFO} {key} {template!r}"
    if not isinstance(template, str):
        raise LeRobotError(f"{where} is not a string")
    try:
        template.format(**episode_fields(0, video_key="camera"))
    except (KeyError, IndexError) as exc:
        name = exc.args[0] if isinstance(exc, KeyError) else ""
        known = ", ".join(f"{{{f}}}" for f in TEMPLATE_FIELDS)
        raise LeRobotError(f"{where} has an unknown placeholder {{{name}}}; known: {known}") from None
    except (ValueError, AttributeError, TypeError) as exc:
        raise LeRobotError(f"{where} is not a valid format string ({exc})") from None
    return template


def resolve(root: str, key: str, template: str, fields: Mapping[str, Any]) -> str:
    """`template` formatted with `fields`, normalised, and refused unless it stays inside `root`.

    Why: a dataset's templates come from its own meta/info.json; a ``../`` (or an absolute path, or
    a URL) would make ingest read, and the catalog name, files of some other folder.
    """
    rel = template.format(**fields)
    norm = posixpath.normpath(rel) if rel else "."
    if "://" in rel or rel.startswith("/") or norm.split("/")[0] in ("..", "."):
        raise LeRobotError(
            f"LeRobot dataset {root}: {INFO} {key} {template!r} names {rel!r}, "
            "which is outside the dataset folder; paths must be relative and stay inside it"
        )
    return norm


def data_file(episode_index: int, chunks_size: int = CHUNKS_SIZE) -> str:
    """An episode's data file, relative to the dataset folder, in the default layout."""
    return resolve("", "data_path", DATA_PATH, episode_fields(episode_index, chunks_size))


def video_file(episode_index: int, video_key: str, chunks_size: int = CHUNKS_SIZE) -> str:
    """An episode's video of camera `video_key`, relative to the dataset folder, in the default layout."""
    return resolve("", "video_path", VIDEO_PATH, episode_fields(episode_index, chunks_size, video_key))


def scalar_feature(dtype: str) -> dict[str, Any]:
    """A one-value-per-frame feature, such as the :data:`INDEX_FEATURES`."""
    return {"dtype": dtype, "shape": [1], "names": None}


def vector_feature(dim: int, names: Sequence[str] | None, dtype: str = "float32") -> dict[str, Any]:
    """A per-frame vector feature (``action``, ``observation.state``) with per-dimension names."""
    return {"dtype": dtype, "shape": [dim], "names": list(names) if names is not None else None}


def video_feature(height: int, width: int, fps: float, codec: str = "h264") -> dict[str, Any]:
    """A camera's feature: H.264 yuv420p frames of `height` x `width` at `fps`, no audio."""
    return {
        "dtype": "video",
        "shape": [height, width, 3],
        "names": ["height", "width", "channels"],
        "info": {
            "video.height": height,
            "video.width": width,
            "video.codec": codec,
            "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        },
    }


def info_json(
    *,
    robot_type: str,
    fps: float,
    total_episodes: int,
    total_frames: int,
    total_tasks: int,
    total_videos: int,
    splits: Mapping[str, str],
    features: Mapping[str, Any],
    chunks_size: int = CHUNKS_SIZE,
) -> dict[str, Any]:
    """The fields of ``meta/info.json`` lerobot's reader needs, with the default path templates."""
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": total_episodes,
        "total_frames": total_frames,
        "total_tasks": total_tasks,
        "total_videos": total_videos,
        "total_chunks": -(-total_episodes // chunks_size) if total_episodes else 0,
        "chunks_size": chunks_size,
        "fps": fps,
        "splits": dict(splits),
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": dict(features),
    }


def jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    """The text of a ``meta/*.jsonl`` file: one JSON object per line."""
    return "".join(json.dumps(row) + "\n" for row in rows)
