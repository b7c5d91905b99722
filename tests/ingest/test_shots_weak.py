"""The clip policy protects continuous takes: weak boundaries trim nothing and short clips merge."""

from __future__ import annotations

import numpy as np

from egocurate.ingest.clips import ClipPolicy, plan_clips
from egocurate.ingest.shots import Shot, Transition, VideoTiming, shots_from_transitions


def _timing(n: int, fps: float = 30.0) -> VideoTiming:
    return VideoTiming(n, fps, np.arange(n) / fps)


def _spans(clips) -> list[tuple[int, int, str]]:
    return [(c.start_frame, c.end_frame, c.kind) for c in clips]


def test_a_weak_boundary_trims_no_footage_and_gives_its_frames_to_both_sides():
    transitions = [Transition(140, 160, "dissolve", 0.1, confidence=0.3)]
    shots = shots_from_transitions(transitions, 300)
    assert shots[1].confidence == 0.3
    clips = plan_clips(shots, _timing(300), ClipPolicy(min_s=2.0, trim_frames=2))
    assert _spans(clips) == [(0, 150, "start"), (150, 300, "dissolve")]  # every frame kept
    strong = [Transition(140, 160, "dissolve", 0.9, confidence=0.9)]
    clips = plan_clips(
        shots_from_transitions(strong, 300), _timing(300), ClipPolicy(min_s=2.0, trim_frames=2)
    )
    assert _spans(clips) == [(0, 138, "start"), (162, 300, "dissolve")]  # a sure one is trimmed as before


def test_a_short_clip_beside_a_weak_boundary_is_merged_not_dropped():
    # a 1 s piece between a weak cut and the end of the video: merged into the clip before it
    shots = [Shot(0, 270, "start"), Shot(270, 300, "cut", confidence=0.2)]
    clips = plan_clips(shots, _timing(300), ClipPolicy(min_s=2.0))
    assert _spans(clips) == [(0, 300, "start")]
    # the same piece behind a sure cut is dropped (and the cut trims a frame)
    shots = [Shot(0, 270, "start"), Shot(270, 300, "cut", confidence=0.95)]
    assert _spans(plan_clips(shots, _timing(300), ClipPolicy(min_s=2.0))) == [(0, 269, "start")]


def test_short_pieces_between_weak_boundaries_chain_into_one_clip():
    shots = [Shot(0, 20, "start"), Shot(20, 45, "cut", confidence=0.1), Shot(45, 200, "cut", confidence=0.1),
             Shot(200, 400, "cut", confidence=1.0)]  # fmt: skip
    clips = plan_clips(shots, _timing(400), ClipPolicy(min_s=2.0))
    assert _spans(clips) == [(0, 199, "start"), (201, 400, "cut")]
