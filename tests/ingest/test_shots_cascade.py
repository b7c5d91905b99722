"""The cascade's window bookkeeping and the content detector's dissolve span fit (no video needed)."""

from __future__ import annotations

import numpy as np

from egocurate.ingest import shot_transnet
from egocurate.ingest.shot_cascade import _union, window_frames, windows_for
from egocurate.ingest.shot_content import _ramp_span


def test_cascade_windows_are_the_reference_inference_windows():
    for n in (1, 49, 50, 173):
        frames = [np.full((1, 1, 1), i, np.int32) for i in range(n)]  # each frame carries its index
        reference = [w[:, 0, 0, 0] for w in shot_transnet._windows(iter(frames))]
        assert len(reference) == (n - 1) // shot_transnet.STEP + 1
        for j, window in enumerate(reference):
            assert np.array_equal(window, window_frames(j, n)), (n, j)


def test_windows_for_picks_the_windows_whose_predicted_frames_touch_a_range():
    assert windows_for([(48, 52)], 300) == {0, 1}
    assert windows_for([(120, 130), (295, 400)], 300) == {2, 5}
    assert _union([(10, 20), (21, 30), (40, 50), (45, 46)]) == [(10, 30), (40, 50)]


def test_dissolve_span_is_the_ramp_even_when_the_shots_move():
    times = np.arange(40, 100, dtype=np.float64)
    alpha = np.clip((times - 60) / 30, 0, 1) * 0.85 + 0.12  # flat parts shifted off 0 and 1 by motion
    assert _ramp_span(times, alpha) == (61, 90)  # mixes frames 61..89, as xfade at offset 60 does
    alpha[:8] = np.linspace(0.0, 0.12, 8)  # the outgoing shot drifts at first
    start, end = _ramp_span(times, alpha)
    assert abs(start - 61) <= 1 and end == 90  # thresholding the weights at 0.05 would start at 42
