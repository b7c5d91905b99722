"""The shots stage: `videos` rows in, `clips` rows out (virtual frame ranges or transcoded MP4s).

One video is decoded once for detection at 64x48 (see ``shot_content``); clips are planned by the
clip policy; with ``materialize: transcode`` each clip is cut to an H.264 MP4 by ffmpeg on the same
CPU actor. A video shorter than the minimum clip length gives no clip and no error (the runner's
ledger remembers it was done). A video that cannot be decoded is quarantined; the run goes on.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from egocurate.catalog import tables
from egocurate.ingest.clips import (
    ClipPolicy,
    clip_geometry,
    clip_id_for,
    config_version,
    plan_clips,
    transcode_clip,
)
from egocurate.ingest.shot_types import VideoTiming
from egocurate.ingest.shots import detect_transitions, shots_from_transitions
from egocurate.media.decode import (
    FRAMES_COLUMN,
    FRAMES_SHAPE_COLUMN,
    DecodeError,
    frames_columns,
    frames_of,
)
from egocurate.stage_base import BaseStage, Resources

_OUT_SCHEMA = pa.schema(
    list(tables.CLIPS.schema)
    + [("uri", pa.string()), (tables.ERROR_KIND, pa.string()), (tables.ERROR_MESSAGE, pa.string())]
)


_TIMING_COLUMN = "_transnet_timing"  # a prepared video's timing (JSON), beside its frames
_NOT_RESULTS = ("device", "threads", "batch_windows", "storage_options")  # do not change which clips come out


class ShotStage(BaseStage):
    """Detect shots, plan clips, optionally transcode them; one row per clip."""

    name = "shots"
    input_key = "video_id"
    output_table = tables.CLIPS.name
    reads = ("uri",)

    def __init__(
        self,
        detector: Literal["content", "transnet", "cascade", "fixed"] = "content",
        detector_params: dict[str, Any] | None = None,
        min_clip_s: float = 2.0,
        max_clip_s: float = 20.0,
        trim_frames: int = 1,
        crop_4_3: bool = False,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        materialize: Literal["virtual", "transcode"] = "virtual",
        clip_dir: str | None = None,
        encoder: Literal["auto", "libx264", "h264_nvenc"] = "auto",
        crf: int = 20,
        batch_size: int = 2,
        cpus: float = 1.0,
        gpus: float = 0.0,
        concurrency: int | None = None,
        storage_options: dict[str, Any] | None = None,
    ):
        self.detector = detector
        self.detector_params = dict(detector_params or {})
        self.policy = ClipPolicy(min_clip_s, max_clip_s, trim_frames, crop_4_3, width, height, fps)
        if materialize == "transcode" and not clip_dir:
            raise ValueError("materialize: transcode needs clip_dir (a folder or URL for the MP4 clips)")
        self.materialize = materialize
        self.clip_dir = clip_dir
        self.encoder = encoder
        self.crf = crf
        self.storage_options = storage_options
        self.resources = Resources(
            cpus=cpus, gpus=gpus, batch_size=batch_size, concurrency=concurrency or None
        )
        # What the clip ids depend on: change any of it and the clips are new rows, not overwrites.
        self.split_config = {
            "detector": detector,
            "detector_params": {
                k: v for k, v in sorted(self.detector_params.items()) if k not in _NOT_RESULTS
            },
            "policy": self.policy.as_dict(),
            "materialize": materialize,
            "crf": crf if materialize == "transcode" else None,
        }
        self.version = config_version(self.split_config)
        self.split_config_json = json.dumps({"version": self.version, **self.split_config}, sort_keys=True)

    def no_output_note(self) -> str:
        return f"video(s) shorter than {self.policy.min_s:g} s (after trimming) produced no clip"

    @property
    def has_prepare(self) -> bool:  # type: ignore[override]
        """With TransNetV2, CPU workers decode the 48x27 frames ahead of the (GPU) model actors."""
        return self.detector == "transnet"

    def prepare(self, batch: pa.Table) -> pa.Table:
        """CPU step for ``detector: transnet``: each video's frames at TransNetV2's input size and its
        timing, carried in the batch. A video that fails here gets none; ``process`` reports it."""
        from egocurate.ingest.shot_transnet import decode_for_transnet

        frames: list[np.ndarray | None] = []
        timings: list[str | None] = []
        threads = max(1, int(self.resources.cpus))
        for video in batch.to_pylist():
            try:
                decoded, timing = decode_for_transnet(video["uri"], threads, self.storage_options)
            except Exception:  # noqa: BLE001 - process decodes again and reports the error
                frames.append(None)
                timings.append(None)
                continue
            frames.append(decoded)
            timings.append(json.dumps({"num_frames": timing.num_frames, "fps": timing.fps,
                                       "timestamps": np.asarray(timing.timestamps).tolist(),
                                       "decoded_frames": timing.decoded_frames}))  # fmt: skip
        data, shapes = frames_columns(frames)
        batch = batch.append_column(FRAMES_COLUMN, data).append_column(FRAMES_SHAPE_COLUMN, shapes)
        return batch.append_column(_TIMING_COLUMN, pa.array(timings, pa.string()))

    def _detect_prepared(self, video: dict):
        """TransNetV2 on frames `prepare` decoded (same windows and batching as decoding here)."""
        from egocurate.ingest.shot_transnet import predict, to_transitions

        frames, timing = frames_of(video), json.loads(video[_TIMING_COLUMN])
        params = self.detector_params
        device, batch_windows = params.get("device", "auto"), params.get("batch_windows")
        probs = predict(iter(frames), device=device, batch_windows=batch_windows)
        transitions = to_transitions(probs, params.get("threshold", 0.5), params.get("cut_max_frames", 2))
        return transitions, VideoTiming(
            timing["num_frames"], timing["fps"], np.asarray(timing["timestamps"]), timing["decoded_frames"]
        )

    def setup(self) -> None:
        """Load TransNetV2 once per worker when it is the detector (the others need nothing)."""
        if self.detector in ("transnet", "cascade"):
            from egocurate.ingest.shot_transnet import load_transnet

            load_transnet(self.detector_params.get("device", "auto"))

    def _detect(self, uri: str):
        params = dict(self.detector_params)
        if self.detector in ("content", "transnet", "cascade", "fixed") and self.storage_options:
            params.setdefault("storage_options", self.storage_options)
        if self.detector == "fixed":
            params.setdefault("window_s", self.policy.max_s)
        else:  # one worker gets `cpus` cores: decode with that many threads, not with every core
            params.setdefault("threads", max(1, int(self.resources.cpus)))
        return detect_transitions(uri, detector=self.detector, **params)

    def _clip_uri(self, video_id: str, clip_id: str) -> str:
        assert self.clip_dir is not None
        base = self.clip_dir.rstrip("/")
        return (
            f"{base}/{video_id}/{clip_id}.mp4"
            if "://" in base
            else os.path.join(base, video_id, f"{clip_id}.mp4")
        )

    def _rows_for(self, video: dict) -> list[dict]:
        uri, video_id = video["uri"], video["video_id"]
        prepared = frames_of(video) is not None and video.get(_TIMING_COLUMN) is not None
        transitions, timing = self._detect_prepared(video) if prepared else self._detect(uri)
        if timing.num_frames == 0:
            raise DecodeError(f"{uri}: no decodable frames")
        shots = shots_from_transitions(transitions, timing.num_frames)
        specs = plan_clips(shots, timing, self.policy)
        src_fps = float(video.get("fps") or timing.fps or 0.0)
        rows = []
        for spec in specs:
            clip_id = clip_id_for(video_id, spec.start_frame, spec.end_frame, self.version)
            width, height = int(video.get("width") or 0), int(video.get("height") or 0)
            rotation = int(video.get("rotation") or 0)
            geometry = clip_geometry(spec, width, height, rotation, src_fps, self.policy, timing)
            clip_uri = encoder = None
            if self.materialize == "transcode":
                target_fps = geometry.fps if geometry.fps != src_fps else None
                clip_uri = self._clip_uri(video_id, clip_id)
                encoder = transcode_clip(
                    uri, clip_uri, spec, geometry,
                    encoder=self.encoder, crf=self.crf, threads=max(1, int(self.resources.cpus)),
                    src_fps=src_fps, target_fps=target_fps,
                    storage_options=self.storage_options,
                )  # fmt: skip
            rows.append(
                {
                    "clip_id": clip_id,
                    "video_id": video_id,
                    "clip_index": spec.index,
                    "start_frame": spec.start_frame,
                    "end_frame": spec.end_frame,
                    "start_s": spec.start_s,
                    "end_s": spec.end_s,
                    "duration_s": round(spec.duration_s, 6),
                    "fps": geometry.fps,
                    "src_fps": src_fps,
                    "num_frames": geometry.num_frames,
                    "split_method": self.detector,
                    "split_config": self.split_config_json,
                    "boundary_kind": spec.kind,
                    "clip_uri": clip_uri,
                    "encoder": encoder,
                    "width": geometry.width,
                    "height": geometry.height,
                    "crop": list(geometry.crop) if geometry.crop else None,
                    "uri": uri,
                    tables.ERROR_KIND: None,
                    tables.ERROR_MESSAGE: None,
                }
            )
        return rows

    def process(self, batch: pa.Table) -> pa.Table:
        out: list[dict] = []
        for video in batch.to_pylist():
            try:
                out.extend(self._rows_for(video))
            except DecodeError as exc:
                out.append(self._error(video, tables.DECODE_ERROR, str(exc)))
            except FileNotFoundError as exc:
                out.append(self._error(video, tables.NOT_FOUND, str(exc)))
            except Exception as exc:  # one bad video must not take the batch down
                out.append(self._error(video, tables.STAGE_EXCEPTION, f"{type(exc).__name__}: {exc}"))
        return pa.Table.from_pylist(out, schema=_OUT_SCHEMA)

    @staticmethod
    def _error(video: dict, kind: str, message: str) -> dict:
        return {"video_id": video["video_id"], "uri": video.get("uri"), tables.ERROR_KIND: kind,
                tables.ERROR_MESSAGE: message[:2000]}  # fmt: skip
