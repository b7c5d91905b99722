"""Shot boundaries behind one interface: ``detect_shots(path, detector=..., **params)``.

Detectors:

- ``content`` (:mod:`egocurate.ingest.shot_content`): our CPU detector on 64x48 frames that the
  decoder produces cheaply (non-reference frames dropped, loop filter skipped). HSV-histogram,
  edge-change and thumbnail features with adaptive thresholds find hard cuts, dissolves and fades.
- ``transnet`` (:mod:`egocurate.ingest.shot_transnet`): TransNetV2 on 48x27 frames, batched, on GPU
  when present.
- ``cascade`` (:mod:`egocurate.ingest.shot_cascade`): the content pass proposes candidates at high
  recall and TransNetV2 runs only on the windows around them; it reports what a full TransNetV2 pass
  reports wherever the proposals cover it, for a fraction of the network time.
- ``fixed``: fixed-stride windows, for footage known to be one take.

A :class:`Transition` covers frames ``[start_frame, end_frame)`` that belong to no shot (a dissolve's
mixed frames, a fade's dark frames); a cut has ``start_frame == end_frame`` = the first frame of the
new shot. A :class:`Shot` is ``[start_frame, end_frame)`` and its ``kind`` says how it begins:
``start`` (the first shot), ``cut``, ``dissolve``, ``fade``, ``gradual`` or ``window`` (fixed stride).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

DetectorName = Literal["content", "transnet", "cascade", "fixed"]
TRANSITION_KINDS = ("cut", "dissolve", "fade", "gradual")


@dataclass(frozen=True)
class Transition:
    """Frames [start_frame, end_frame) between two shots; a cut has no frames (start == end)."""

    start_frame: int
    end_frame: int
    kind: str = "cut"
    score: float = 0.0
    confidence: float = 1.0  # 0-1; the clip policy does not trim footage at a weak boundary

    @property
    def is_cut(self) -> bool:
        return self.kind == "cut"


@dataclass(frozen=True)
class Shot:
    """Frames [start_frame, end_frame) of one shot; `kind` is how it begins."""

    start_frame: int
    end_frame: int
    kind: str = "start"
    confidence: float = 1.0  # of the boundary that opens this shot

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame


@dataclass
class VideoTiming:
    """How many frames a video has and when each one is shown (seconds from the first frame)."""

    num_frames: int
    fps: float
    timestamps: np.ndarray = field(repr=False)
    decoded_frames: int = 0  # frames the detector actually decoded (a speed diagnostic)

    def time_of(self, frame: int) -> float:
        """Presentation time of `frame`; one past the last frame is the end of the video."""
        if self.num_frames == 0:
            return 0.0
        if frame >= self.num_frames:  # past the last frame: it lasts as long as the frame before it
            last = float(self.timestamps[-1])
            if self.num_frames >= 2:
                step = last - float(self.timestamps[-2])
            else:
                step = 1.0 / self.fps if self.fps > 0 else 0.0
            return last + step * (frame - self.num_frames + 1)
        return float(self.timestamps[max(frame, 0)])


def shots_from_transitions(transitions: Sequence[Transition], num_frames: int) -> list[Shot]:
    """The shots between `transitions` (sorted, non-overlapping after clamping); empty shots dropped."""
    shots: list[Shot] = []
    start, kind, confidence = 0, "start", 1.0
    for t in sorted(transitions, key=lambda t: (t.start_frame, t.end_frame)):
        a, b = max(start, min(t.start_frame, num_frames)), max(start, min(t.end_frame, num_frames))
        if a > start:
            shots.append(Shot(start, a, kind, confidence))
        kind, confidence = t.kind, t.confidence
        start = max(a, b)
    if num_frames > start:
        shots.append(Shot(start, num_frames, kind, confidence))
    return shots


def transitions_from_shots(shots: Sequence[Shot]) -> list[Transition]:
    """The transitions between consecutive shots (the inverse of :func:`shots_from_transitions`)."""
    ordered = sorted(shots, key=lambda s: s.start_frame)
    return [
        Transition(prev.end_frame, nxt.start_frame, nxt.kind, confidence=nxt.confidence)
        for prev, nxt in zip(ordered, ordered[1:], strict=False)
    ]


def fixed_windows(num_frames: int, window: int) -> list[Shot]:
    """Back-to-back windows of `window` frames (the last one may be shorter)."""
    if window < 1:
        raise ValueError(f"window must be >= 1 frame, got {window}")
    return [
        Shot(a, min(a + window, num_frames), "start" if a == 0 else "window")
        for a in range(0, num_frames, window)
    ]


def probe_timing(path: str, storage_options: dict | None = None) -> VideoTiming:
    """Frame count, rate and per-frame times from the demuxer alone (no decoding)."""
    from egocurate.ingest.decode import frame_times

    times, fps = frame_times(path, storage_options)
    return VideoTiming(len(times), fps, times)


def detect_transitions(
    path: str, detector: DetectorName = "content", **params: Any
) -> tuple[list[Transition], VideoTiming]:
    """Transitions found by `detector` and the video's timing (frames, fps, per-frame times)."""
    if detector == "content":
        from egocurate.ingest.shot_content import ContentParams, detect_content

        return detect_content(path, ContentParams(**params))
    if detector == "transnet":
        from egocurate.ingest.shot_transnet import detect_transnet

        return detect_transnet(path, **params)
    if detector == "cascade":
        from egocurate.ingest.shot_cascade import detect_cascade

        return detect_cascade(path, **params)
    if detector == "fixed":
        timing = probe_timing(path, params.pop("storage_options", None))
        window_s = float(params.pop("window_s", 20.0))
        if params:
            raise TypeError(f"fixed detector: unknown parameters {sorted(params)}")
        window = max(1, round(window_s * (timing.fps or 30.0)))
        return transitions_from_shots(fixed_windows(timing.num_frames, window)), timing
    raise ValueError(f"unknown detector {detector!r}; allowed: content, transnet, fixed, cascade")


def detect_shots(path: str, detector: DetectorName = "content", **params: Any) -> list[Shot]:
    """Shots of the video at `path` as found by `detector` (see the module docstring)."""
    transitions, timing = detect_transitions(path, detector=detector, **params)
    return shots_from_transitions(transitions, timing.num_frames)
