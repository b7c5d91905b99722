"""LeRobot v2.x datasets as a source: episodes, their video of one camera, their action arrays.

The layout is lerobot's v2.0/v2.1 one (``meta/info.json`` with ``data_path`` and ``video_path``
templates, ``meta/episodes.jsonl``, ``data/chunk-*/episode_*.parquet``,
``videos/chunk-*/<video_key>/episode_*.mp4``), defined once in ``egocurate.lerobot_layout``
together with the checks of a dataset's own path templates; the export writes the same layout.
Every episode becomes one video (the MP4 of the chosen camera); its ``action`` and
``observation.state`` columns go to ``episode_actions``. A dataset whose ``meta/info.json`` is
missing or broken, or whose path templates name a file outside the dataset folder (``../``, an
absolute path, a URL) or a placeholder lerobot does not fill, raises :class:`LeRobotError` (a user
error: ``egocurate ingest`` prints it on one line); a per-episode problem (a missing parquet, an
action column whose length is not the video's frame count) is the episode's, and quarantines only
it.
"""

from __future__ import annotations

import json
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from egocurate.lerobot_layout import (
    ACTION_KEY,
    CHUNKS_SIZE,
    EPISODES,
    INFO,
    STATE_KEY,
    SUPPORTED_VERSIONS,
    LeRobotError,
    checked_template,
    episode_fields,
    resolve,
)
from egocurate.storage import fsspec_options


def _fs(uri: str, storage_options: dict | None) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(uri, **fsspec_options(storage_options))


def is_lerobot_dataset(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """A folder with ``meta/info.json`` or ``meta/episodes.jsonl`` (the latter alone is a broken one)."""
    if any(ch in path for ch in "*?[") or not fs.isdir(path):
        return False
    base = path.rstrip("/")
    return fs.exists(f"{base}/{INFO}") or fs.exists(f"{base}/{EPISODES}")


def read_info(root: str, storage_options: dict | None = None) -> dict[str, Any]:
    """``meta/info.json`` of the dataset at `root`, checked for what ingest needs."""
    fs, path = _fs(f"{root.rstrip('/')}/{INFO}", storage_options)
    if not fs.exists(path):
        raise LeRobotError(f"LeRobot dataset {root}: {INFO} is missing")
    try:
        info = json.loads(fs.cat_file(path).decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LeRobotError(f"LeRobot dataset {root}: {INFO} is not valid JSON ({exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
        raise LeRobotError(f"LeRobot dataset {root}: {INFO} has no 'features' mapping")
    version = str(info.get("codebase_version", ""))
    if version not in SUPPORTED_VERSIONS:
        raise LeRobotError(
            f"LeRobot dataset {root}: codebase_version {version or '(none)'} is not supported "
            f"(supported: {', '.join(SUPPORTED_VERSIONS)})"
        )
    try:
        if float(info["fps"]) <= 0:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise LeRobotError(f"LeRobot dataset {root}: {INFO} has no positive 'fps'") from None
    return info


def video_keys(info: dict[str, Any]) -> list[str]:
    """The dataset's camera keys, in the order info.json lists them."""
    return [k for k, v in info["features"].items() if isinstance(v, dict) and v.get("dtype") == "video"]


def feature_names(info: dict[str, Any], key: str) -> list[str] | None:
    """A feature's per-dimension names (a list, or a dict of lists as some datasets write them)."""
    names = (info["features"].get(key) or {}).get("names")
    if isinstance(names, dict):
        names = [n for group in names.values() for n in (group if isinstance(group, list) else [group])]
    return [str(n) for n in names] if isinstance(names, list) else None


def feature_units(info: dict[str, Any], key: str) -> list[str] | None:
    """Per-dimension units where the dataset gives them (a ``units`` list or one string for all)."""
    feature = info["features"].get(key) or {}
    units = feature.get("units", feature.get("unit"))
    if isinstance(units, str):
        dim = int((feature.get("shape") or [1])[0])
        return [units] * dim
    return [str(u) for u in units] if isinstance(units, list) else None


def _episodes(root: str, info: dict[str, Any], storage_options: dict | None) -> list[dict[str, Any]]:
    fs, path = _fs(f"{root.rstrip('/')}/{EPISODES}", storage_options)
    if not fs.exists(path):  # v2.0 writers always have it; fall back to the count in info.json
        return [{"episode_index": i} for i in range(int(info.get("total_episodes") or 0))]
    out = []
    for lineno, line in enumerate(fs.cat_file(path).decode("utf-8-sig").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                where = f"LeRobot dataset {root}: {EPISODES}:{lineno}"
                raise LeRobotError(f"{where}: {exc.msg}") from None
    return out


def lerobot_episodes(
    root: str, camera: str | None = None, storage_options: dict | None = None
) -> list[dict[str, Any]]:
    """One row per episode: the chosen camera's MP4 `uri`, dataset, task and where its actions are."""
    info = read_info(root, storage_options)
    keys = video_keys(info)
    if not keys:
        raise LeRobotError(f"LeRobot dataset {root}: info.json lists no video feature")
    if camera is not None and camera not in keys:
        raise LeRobotError(f"LeRobot dataset {root}: no camera {camera!r}; cameras: {', '.join(keys)}")
    camera = camera or keys[0]
    chunks = int(info.get("chunks_size") or CHUNKS_SIZE)
    data_path = checked_template(root, info, "data_path")
    video_path = checked_template(root, info, "video_path")
    base = root.rstrip("/")
    name = base.rsplit("/", 1)[-1]
    rows = []
    for episode in _episodes(root, info, storage_options):
        index = int(episode["episode_index"])
        fields = episode_fields(index, chunks, camera)
        tasks = episode.get("tasks") or []
        rows.append(
            {
                "uri": f"{base}/{resolve(root, 'video_path', video_path, fields)}",
                "dataset": name,
                "task_text": str(tasks[0]) if tasks else None,
                "dataset_uri": base,
                "episode_index": index,
                "camera": camera,
                "actions_uri": f"{base}/{resolve(root, 'data_path', data_path, fields)}",
            }
        )
    return rows


def episode_length(actions_uri: str, storage_options: dict | None = None) -> int:
    """Rows of an episode's data file (its frame count), from the Parquet footer alone."""
    fs, path = _fs(actions_uri, storage_options)
    if not fs.exists(path):
        raise FileNotFoundError(f"episode data file not found: {actions_uri}")
    with fs.open(path, "rb") as fh:
        return int(pq.ParquetFile(fh).metadata.num_rows)


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    """(rows, dim) float32 from a list / fixed-size-list column (or a scalar column as dim 1)."""
    column = column.combine_chunks()
    if (
        pa.types.is_list(column.type)
        or pa.types.is_fixed_size_list(column.type)
        or pa.types.is_large_list(column.type)
    ):
        values = column.to_pylist()
        return np.asarray(values, dtype=np.float32).reshape(len(values), -1)
    return column.to_numpy(zero_copy_only=False).astype(np.float32)[:, None]


def read_episode_arrays(
    actions_uri: str, storage_options: dict | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(actions [n, A], states [n, S] or None) of one episode, float32."""
    fs, path = _fs(actions_uri, storage_options)
    if not fs.exists(path):
        raise FileNotFoundError(f"episode data file not found: {actions_uri}")
    with fs.open(path, "rb") as fh:
        names = pq.ParquetFile(fh).schema_arrow.names
        if ACTION_KEY not in names:
            raise KeyError(f"{actions_uri} has no {ACTION_KEY!r} column (columns: {', '.join(names)})")
        fh.seek(0)
        table = pq.read_table(fh, columns=[c for c in (ACTION_KEY, STATE_KEY) if c in names])
    states = _matrix(table.column(STATE_KEY)) if STATE_KEY in table.column_names else None
    return _matrix(table.column(ACTION_KEY)), states
