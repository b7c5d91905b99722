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
from typing import Any, Literal

from egocurate.ingest.shot_types import TRANSITION_KINDS, Shot, Transition, VideoTiming

__all__ = [
    "TRANSITION_KINDS", "DetectorName", "Shot", "Transition", "VideoTiming", "detect_shots",
    "detect_transitions", "fixed_windows", "shots_from_transitions", "transitions_from_shots",
]  # fmt: skip

DetectorName = Literal["content", "transnet", "cascade", "fixed"]


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
    from egocurate.media.decode import frame_times

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
