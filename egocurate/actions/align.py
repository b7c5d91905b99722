"""Stored actions matched to the frames a consumer renders: LAM latent actions (per source-frame
pair at the LAM's stride), IDM pseudo-actions (per clip transition) and recorded robot actions
(per source frame). Shards and both exports call these, so every output lines actions up alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def _rate(row: Mapping[str, Any], names: tuple[str, ...], default: float) -> float:
    """The first of the row's rate columns `names` that holds a value."""
    return float(next((row[n] for n in names if row.get(n) not in (None, "")), default))


def align_latent_actions(
    data: bytes | None, shape: list[int] | None, lam_stride: int | None, offsets: list[int]
) -> tuple[np.ndarray | None, str | None]:
    """Latent actions for consecutive frame pairs of a clip rendered at source `offsets`.

    The LAM's row k covers source frames (k*stride, (k+1)*stride) of the clip. A rendered pair
    (offsets[i], offsets[i+1]) takes the nearest row; "exact" when every pair is a LAM pair.
    """
    if data is None or not shape or len(offsets) < 2:
        return None, None
    actions = np.frombuffer(data, dtype="<f2").reshape([int(x) for x in shape])
    stride = max(1, int(lam_stride or 1))
    starts = np.asarray(offsets[:-1], dtype=np.float64)
    rows = np.clip(np.floor(starts / stride + 0.5).astype(np.int64), 0, len(actions) - 1)
    gaps = np.diff(np.asarray(offsets))
    exact = bool(
        np.all(np.asarray(offsets[:-1]) % stride == 0)
        and np.all(gaps == stride)
        and starts[-1] / stride < len(actions)
    )
    return actions[rows], ("exact" if exact else "nearest")


def clip_source_frames(view_row: Mapping[str, Any], offsets: list[int]) -> np.ndarray:
    """Source-video frame numbers of a clip's rendered `offsets` (what real actions are indexed by).

    Offsets count frames of what ``media.source.clip_source`` names: the source itself for a virtual
    clip, the transcoded clip file (at the clip's own rate) otherwise.
    """
    start = int(view_row.get("start_frame") or 0)
    offsets_arr = np.asarray(offsets, dtype=np.float64)
    if view_row.get("clip_uri"):
        clip_fps = _rate(view_row, ("fps", "video_fps"), 30.0)
        video_fps = _rate(view_row, ("video_fps", "src_fps"), clip_fps)
        offsets_arr = np.round(offsets_arr * video_fps / clip_fps)
    return start + offsets_arr.astype(np.int64)


def align_real_actions(
    data: bytes | None, shape: list[int] | None, view_row: Mapping[str, Any], offsets: list[int]
) -> np.ndarray | None:
    """Recorded per-frame actions (``episode_actions``, float32) of the rendered frames, or None
    when the episode holds none or does not cover every frame of the clip."""
    if data is None or not shape or not offsets:
        return None
    actions = np.frombuffer(data, dtype="<f4").reshape([int(x) for x in shape])
    frames = clip_source_frames(view_row, offsets)
    if frames.min() < 0 or frames.max() >= len(actions):
        return None
    return actions[frames].astype(np.float32)


def align_idm_actions(
    data: bytes | None, shape: list[int] | None, span: int, offsets: list[int]
) -> tuple[np.ndarray | None, str | None]:
    """IDM pseudo-actions (``clip_idm_actions``, float16 (T-1, A)) of each rendered frame.

    Row k is the action from clip frame k*s to (k+1)*s, s = (span-1)/(T-1) (1 when the IDM labelled
    every transition of the `span`-frame clip), in the robot's units, like a recorded action at
    frame k*s. A rendered frame takes the nearest row, the last frame the last row (held); "exact"
    when every rendered frame but the last starts a row.
    """
    if data is None or not shape or not offsets or int(shape[0]) < 1:
        return None, None
    actions = np.frombuffer(data, dtype="<f2").reshape([int(x) for x in shape]).astype(np.float32)
    rows = len(actions)
    stride = max(1, int(round((span - 1) / rows)))
    nearest = np.floor(np.asarray(offsets, dtype=np.float64) / stride + 0.5).astype(np.int64)
    index = np.clip(nearest, 0, rows - 1)
    exact = stride * rows == span - 1 and all(o % stride == 0 for o in offsets[:-1])
    return actions[index], ("exact" if exact else "nearest")
