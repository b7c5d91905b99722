"""The ``quality`` stage: scores each clip from one low-resolution decode (see ``filters.quality``)."""

from __future__ import annotations

from typing import Any

import cv2
import pyarrow as pa

from egocurate.catalog import tables
from egocurate.filters.quality import MotionMethod, QualitySettings, quality_plan, score_frames, split_windows
from egocurate.media.decode import FramePlan, frames_of, read_plan
from egocurate.media.source import clip_source
from egocurate.stage_base import BaseStage, Resources

PASS_THROUGH = ("clip_id", "video_id", "duration_s", "fps", "width", "height")


class QualityStage(BaseStage):
    """Score each clip from one low-resolution decode: motion, static, shake, blur, exposure, text."""

    name = "quality"
    input_key = "clip_id"
    output_table = tables.CLIP_QUALITY.name
    reads = ("uri", "start_frame", "end_frame")

    def __init__(
        self,
        analysis_long_side: int = 256,
        flow_long_side: int = 80,
        sample_fps: float = 5.0,
        max_frames: int = 48,
        window: int = 8,
        static_level: int = 12,
        static_pixels: float = 0.0025,
        flow_every: int = 2,
        motion_method: MotionMethod = "farneback",
        batch_size: int = 8,
        cpus: float | None = None,
        concurrency: int | None = None,
    ):
        if min(analysis_long_side, flow_long_side, max_frames) < 2 or sample_fps <= 0:
            raise ValueError("analysis_long_side, flow_long_side and max_frames must be >= 2, sample_fps > 0")
        self.settings = QualitySettings(
            analysis_long_side=analysis_long_side,
            flow_long_side=flow_long_side,
            sample_fps=sample_fps,
            max_frames=max_frames,
            window=window,
            static_level=static_level,
            static_pixels=static_pixels,
            flow_every=max(1, flow_every),
            motion_method=motion_method,
        )
        self.threads = None if cpus is None else max(1, int(cpus))  # OpenCV threads, only when asked
        self.resources = Resources(cpus=cpus or 1.0, batch_size=batch_size, concurrency=concurrency)

    def setup(self) -> None:
        """With `cpus` configured, OpenCV uses that many threads (process-wide, so only when asked)."""
        if self.threads is not None:
            cv2.setNumThreads(self.threads)

    def frame_plan(self, row: dict[str, Any]) -> FramePlan | None:
        try:
            source = clip_source(row)
        except (KeyError, TypeError, ValueError):
            return None  # process reports the bad row
        return quality_plan(source, self.settings)[0] if source.num_frames >= 2 else None

    def score_row(self, row: dict[str, Any]) -> dict[str, Any]:
        out = {k: row.get(k) for k in PASS_THROUGH}
        try:
            source = clip_source(row)
        except (KeyError, TypeError, ValueError) as exc:
            return {**out, tables.ERROR_KIND: tables.ABSURD_METADATA, tables.ERROR_MESSAGE: str(exc)}
        if source.num_frames < 2:
            message = f"clip has {source.num_frames} frame(s); quality needs at least 2"
            return {**out, tables.ERROR_KIND: tables.TOO_SHORT, tables.ERROR_MESSAGE: message}
        try:
            plan, lengths, dt = quality_plan(source, self.settings)
            shared = frames_of(row)  # decoded once for several stages (jobs.fused): the same frames
            windows = split_windows(read_plan(plan) if shared is None else shared, lengths, self.settings)
        except Exception as exc:  # decord raises its own error types for broken files
            message = f"{type(exc).__name__}: {exc}"[:2000]
            return {**out, tables.ERROR_KIND: tables.DECODE_ERROR, tables.ERROR_MESSAGE: message}
        if sum(len(w) for w in windows) < 2:
            return {
                **out,
                tables.ERROR_KIND: tables.TOO_SHORT,
                tables.ERROR_MESSAGE: "fewer than 2 frames decoded",
            }
        return {
            **out,
            **score_frames(windows, dt, self.settings),
            tables.ERROR_KIND: None,
            tables.ERROR_MESSAGE: None,
        }

    def process(self, batch: pa.Table) -> pa.Table:
        rows = [self.score_row(row) for row in batch.to_pylist()]
        schema = pa.schema(
            list(tables.CLIP_QUALITY.schema)
            + [(tables.ERROR_KIND, pa.string()), (tables.ERROR_MESSAGE, pa.string())]
        )
        return pa.Table.from_pylist(rows, schema=schema)
