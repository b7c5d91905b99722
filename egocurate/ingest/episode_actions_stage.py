"""The episode_actions stage: robot-episode `videos` rows in, their recorded action arrays out.

It reads each episode's ``action`` and ``observation.state`` columns from the LeRobot data file the
ingest stage found (``videos.actions_uri``), with names and units from the dataset's
``meta/info.json``, and returns one ``episode_actions`` row per video. Rows of ordinary videos never
reach it (``jobs.inputs.robot_episodes``). A data file without an action column, or whose length is
not the video's frame count, quarantines that episode only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from egocurate.catalog import tables
from egocurate.ingest.lerobot import (
    ACTION_KEY,
    STATE_KEY,
    feature_names,
    feature_units,
    read_episode_arrays,
    read_info,
)
from egocurate.ingest.probe_stage import ACTION_LENGTH_MISMATCH, MISSING_ACTIONS
from egocurate.stage_base import BaseStage, Resources

_OUT_SCHEMA = pa.schema(
    list(tables.EPISODE_ACTIONS.schema)
    + [("uri", pa.string()), (tables.ERROR_KIND, pa.string()), (tables.ERROR_MESSAGE, pa.string())]
)


def array_bytes(values: np.ndarray) -> tuple[bytes, list[int]]:
    """(float32 little-endian bytes, shape) as ``episode_actions`` stores arrays."""
    values = np.ascontiguousarray(values, dtype="<f4")
    return values.tobytes(), [int(s) for s in values.shape]


def decode_episode_array(data: bytes | None, shape: list[int] | None) -> np.ndarray | None:
    """The float32 array an ``episode_actions`` row holds in `data` (None stays None)."""
    if data is None or not shape:
        return None
    return np.frombuffer(data, dtype="<f4").reshape([int(s) for s in shape])


class EpisodeActionsStage(BaseStage):
    """Read each robot episode's actions and states into ``episode_actions`` (keyed by video_id)."""

    name = "episode_actions"
    input_key = "video_id"
    output_table = tables.EPISODE_ACTIONS.name
    reads = ("uri", "actions_uri", "dataset_uri", "episode_index", "camera", "fps", "num_frames")

    def __init__(self, batch_size: int = 32, storage_options: dict | None = None):
        self.storage_options = storage_options
        self.resources = Resources(cpus=1, batch_size=batch_size)
        self._infos: dict[str, dict[str, Any]] = {}

    def setup(self) -> None:
        """Nothing to load: info.json is read once per dataset as rows arrive."""

    def _info(self, dataset_uri: str) -> dict[str, Any]:
        if dataset_uri not in self._infos:
            self._infos[dataset_uri] = read_info(dataset_uri, self.storage_options)
        return self._infos[dataset_uri]

    def _row(self, row: dict[str, Any]) -> dict[str, Any]:
        out = {"video_id": row["video_id"], "uri": row.get("uri")}
        try:
            info = self._info(row["dataset_uri"])
            actions, states = read_episode_arrays(row["actions_uri"], self.storage_options)
        except (FileNotFoundError, KeyError, ValueError) as exc:
            message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            return {**out, tables.ERROR_KIND: MISSING_ACTIONS, tables.ERROR_MESSAGE: message}
        frames = row.get("num_frames")
        if frames is not None and len(actions) != int(frames):
            message = f"{len(actions)} action rows but the video has {frames} frames ({row['actions_uri']})"
            return {**out, tables.ERROR_KIND: ACTION_LENGTH_MISMATCH, tables.ERROR_MESSAGE: message}
        action_bytes, action_shape = array_bytes(actions)
        state_bytes, state_shape = array_bytes(states) if states is not None else (None, None)
        version = str(info.get("codebase_version"))
        return {
            **out,
            "dataset_uri": row["dataset_uri"],
            "episode_index": row.get("episode_index"),
            "camera": row.get("camera"),
            "fps": float(info["fps"]),
            "num_frames": len(actions),
            "actions": action_bytes,
            "actions_shape": action_shape,
            "action_names": feature_names(info, ACTION_KEY),
            "action_units": feature_units(info, ACTION_KEY),
            "states": state_bytes,
            "states_shape": state_shape,
            "state_names": feature_names(info, STATE_KEY) if states is not None else None,
            "source_format": f"lerobot_{version}",
            tables.ERROR_KIND: None,
            tables.ERROR_MESSAGE: None,
        }

    def process(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([self._row(r) for r in batch.to_pylist()], schema=_OUT_SCHEMA)
