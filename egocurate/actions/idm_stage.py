"""The ``idm_actions`` stage: clips in, IDM pseudo-actions (T−1, A) in the robot's units out.

For each clip of T frames it builds the frame pairs (s_t, s_{t+H}) at t = 0, H, 2H, … (plus one last
window ending at the clip's last frame), predicts the action chunks in large model batches, stitches
them into one action per frame transition, de-normalises to real units and stores them as float16
(``clip_idm_actions``) with the model id, the checkpoint's sha256 and the horizon.

Which clips: those whose video has no real actions (no ``episode_actions`` row), or every clip with
``all=True``. Where real actions exist, the row also carries the MAE and RMSE of the pseudo-actions
against them (over all dims, real units). Inputs come from ``jobs.inputs.idm_inputs``: clip rows with
the episode's ``real_actions`` bytes and ``real_actions_shape`` (null when the video has none).

On Ray, :meth:`prepare` decodes on CPU workers and :meth:`process` predicts on the GPU actor (the
model is loaded once per actor in :meth:`setup`); without a prepare step, :meth:`process` decodes.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from egocurate.actions.arrays import pack_f16
from egocurate.actions.common import (
    Device,
    classify_decode_error,
    error_row,
    gpus_for,
    output_table,
    pick_device,
)
from egocurate.actions.frames import pairs_to_tensor, read_model_frames, source_problem
from egocurate.catalog import tables
from egocurate.media.decode import FRAMES_COLUMN, FRAMES_SHAPE_COLUMN, frames_columns, frames_of
from egocurate.media.source import clip_source
from egocurate.stage_base import BaseStage, Resources

ACTION_DIM_MISMATCH = "action_dim_mismatch"
PASS_THROUGH = (("uri", pa.string()), ("duration_s", pa.float64()))
PREPARE_ERROR, PREPARE_MESSAGE = "_idm_prepare_error", "_idm_prepare_message"


def _on_source(row: dict) -> dict:
    """The row read from its source video even when the clip was transcoded: real actions are
    recorded per source frame, so the IDM pairs them with the source's own frames."""
    return {**row, "clip_uri": None}


class IDMActionStage(BaseStage):
    """Label clips with an inverse dynamics model's pseudo-actions."""

    name = "idm_actions"
    input_key = "clip_id"
    output_table = tables.CLIP_IDM_ACTIONS.name
    reads = ("uri", "start_frame", "end_frame")
    has_prepare = True

    def __init__(
        self,
        checkpoint: str,
        all: bool = False,  # noqa: A002 - the documented pipeline parameter name
        model_id: str | None = None,
        device: Device = "auto",
        pair_batch_size: int = 256,
        batch_size: int = 16,
        cpus: float = 1.0,
        gpus: float | None = None,
        concurrency: int | None = None,
    ):
        if pair_batch_size < 1:
            raise ValueError("pair_batch_size must be >= 1")
        self.checkpoint, self.label_all, self.model_id = checkpoint, bool(all), model_id
        self.device_choice, self.pair_batch_size = device, int(pair_batch_size)
        self.resources = Resources(
            cpus=cpus, gpus=gpus_for(device, gpus), batch_size=batch_size, concurrency=concurrency or None
        )
        self.prepare_resources = Resources(cpus=1.0, batch_size=batch_size)
        self.model = None

    # ------------------------------------------------------------------ model
    def setup(self) -> None:
        """Load the IDM once per worker (safetensors + JSON), on the GPU when there is one."""
        from egocurate.actions.idm import checkpoint_hash, load_idm

        if self.model is not None:
            return
        self.device = pick_device(self.device_choice)
        self.model = load_idm(self.checkpoint, map_location=self.device)
        self.hash = checkpoint_hash(self.model_path)
        self.resolved_model_id = self.model_id or self.model.config.model_id

    @property
    def model_path(self) -> str:
        path = str(self.checkpoint)
        return path if path.endswith(".safetensors") else os.path.splitext(path)[0] + ".safetensors"

    def select_inputs(self, rows: pa.Table) -> pa.Table:
        """Clips without real actions, or all clips with ``all=True`` (before the done-key anti-join)."""
        if self.label_all or "real_actions" not in rows.column_names:
            return rows
        return rows.filter(pc.is_null(rows.column("real_actions")))

    def _config(self) -> dict:
        """The checkpoint's JSON config (read without loading weights: CPU prepare workers need it)."""
        import json

        if self.model is not None:
            return self.model.config.as_dict()
        if getattr(self, "_sidecar", None) is None:
            sidecar = os.path.splitext(self.model_path)[0] + ".json"
            with open(sidecar) as fh:
                self._sidecar = json.load(fh)
        return self._sidecar

    def _hw(self) -> tuple[int, int]:
        config = self._config()
        return int(config.get("height", 64)), int(config.get("width", 64))

    def _horizon(self) -> int:
        return int(self._config().get("horizon", 1))

    # ------------------------------------------------------------------ checks and frames
    def _check(self, row: dict) -> tuple[str, str] | None:
        problem = source_problem(_on_source(row))
        if problem is not None:
            return problem
        frames = int(row["end_frame"]) - int(row["start_frame"])
        if frames < self._horizon() + 1:
            return (
                tables.TOO_SHORT,
                f"clip has {frames} frames; the IDM needs horizon+1 = {self._horizon() + 1}",
            )
        return None

    def _real_actions(self, row: dict) -> np.ndarray | None:
        """The clip's slice of the episode's real actions (T−1, A), or None; raises on a bad shape."""
        if row.get("real_actions") is None:
            return None
        shape = [int(s) for s in row.get("real_actions_shape") or []]
        if len(shape) != 2:
            raise ValueError(f"real actions have shape {shape}, expected [num_frames, action_dim]")
        actions = np.frombuffer(row["real_actions"], dtype="<f4").reshape(shape)
        start, end = int(row["start_frame"]), int(row["end_frame"])
        if end - 1 > len(actions):
            raise ValueError(f"clip frames [{start}, {end}) run past the episode's {len(actions)} actions")
        return actions[start : end - 1].astype(np.float32)

    def _frames(self, row: dict) -> np.ndarray:
        shared = frames_of(row)
        if shared is not None:
            return shared
        source = clip_source(_on_source(row))
        return read_model_frames(source.uri, range(source.start, source.end), self._hw(), source.size)

    def prepare(self, batch: pa.Table) -> pa.Table:
        """CPU step: decode each clip's frames at the model's size (errors are marked, not raised)."""
        frames_col, kinds, messages = [], [], []
        for row in batch.to_pylist():
            problem, frames = self._check(row), None
            if problem is None:
                try:
                    frames = self._frames(row)
                except Exception as exc:
                    problem = classify_decode_error(exc), f"{type(exc).__name__}: {exc}"
            frames_col.append(frames)
            kinds.append(problem[0] if problem else None)
            messages.append(problem[1] if problem else None)
        data, shapes = frames_columns(frames_col)
        out = batch.append_column(FRAMES_COLUMN, data).append_column(FRAMES_SHAPE_COLUMN, shapes)
        out = out.append_column(PREPARE_ERROR, pa.array(kinds, pa.string()))
        return out.append_column(PREPARE_MESSAGE, pa.array(messages, pa.string()))

    # ------------------------------------------------------------------ the stage
    def predict(self, pairs: np.ndarray) -> np.ndarray:
        """Action chunks (K, H, A) in real units for uint8 pairs (K, 2, h, w, 3), in model batches."""
        import torch

        out = []
        for begin in range(0, len(pairs), self.pair_batch_size):
            chunk = pairs_to_tensor(pairs[begin : begin + self.pair_batch_size], self.device)
            with torch.inference_mode():
                out.append(self.model.predict(chunk).float().cpu().numpy())
        return np.concatenate(out)

    def process(self, batch: pa.Table) -> pa.Table:
        """One output row per clip: pseudo-actions (and errors vs real actions), or an error row."""
        from egocurate.actions.idm import chunk_starts, stitch_chunks

        self.setup()
        horizon, dim = self.model.config.horizon, self.model.config.action_dim
        rows = batch.to_pylist()
        out: list[dict | None] = [None] * len(rows)
        work: list[tuple[int, list[int], int, np.ndarray | None]] = []  # row, starts, frames, real
        pairs: list[np.ndarray] = []
        for i, row in enumerate(rows):
            problem = None if row.get(FRAMES_COLUMN) is not None else self._check(row)
            if problem is None and row.get(PREPARE_ERROR):
                problem = row[PREPARE_ERROR], row.get(PREPARE_MESSAGE) or ""
            real = None
            if problem is None:
                try:
                    real = self._real_actions(row)
                except ValueError as exc:
                    problem = tables.ABSURD_METADATA, f"real actions: {exc}"
            if problem is None and real is not None and real.shape[1] != dim:
                problem = (
                    ACTION_DIM_MISMATCH,
                    (
                        f"IDM {self.resolved_model_id} predicts {dim} action dims, "
                        f"the episode has {real.shape[1]}"
                    ),
                )
            if problem is None:
                try:
                    frames = self._frames(row)
                except Exception as exc:
                    problem = classify_decode_error(exc), f"{type(exc).__name__}: {exc}"
            if problem is not None:
                out[i] = error_row(row, self.input_key, *problem)
                continue
            starts = chunk_starts(len(frames), horizon)
            pairs.append(np.stack([np.stack([frames[s], frames[s + horizon]]) for s in starts]))
            work.append((i, starts, len(frames), real))
        chunks = self.predict(np.concatenate(pairs)) if pairs else np.zeros((0, horizon, dim), np.float32)
        offset = 0
        for i, starts, num_frames, real in work:
            row = rows[i]
            actions = stitch_chunks(chunks[offset : offset + len(starts)], starts, num_frames)
            offset += len(starts)
            data, shape = pack_f16(actions)
            mae = rmse = None
            if real is not None:
                stored = np.frombuffer(data, dtype="<f2").reshape(shape).astype(np.float32)
                diff = stored - real
                mae, rmse = float(np.abs(diff).mean()), float(np.sqrt((diff**2).mean()))
            out[i] = {
                "clip_id": row["clip_id"],
                "video_id": row.get("video_id"),
                "uri": row.get("uri"),
                "duration_s": row.get("duration_s"),
                "idm_model_id": self.resolved_model_id,
                "checkpoint_hash": self.hash,
                "horizon": horizon,
                "actions": data,
                "actions_shape": shape,
                "action_names": list(self.model.config.action_names),
                "real_action_mae": mae,
                "real_action_rmse": rmse,
            }
        return output_table(out, tables.CLIP_IDM_ACTIONS.schema, PASS_THROUGH)
