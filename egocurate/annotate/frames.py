"""Frames of one clip row for the captioner and the report's thumbnails (decoded via media.decode)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from egocurate.media.crop import short_side_size
from egocurate.media.decode import read_frames, sample_indices


def clip_frames(row: Mapping[str, Any], count: int = 1, short_side: int = 224) -> np.ndarray:
    """`count` evenly spaced RGB frames (N, H, W, 3) of a clip row from the clips input.

    A transcoded clip (``clip_uri``) is read from its own file; a virtual clip from its video, by frame range.
    """
    start, end = int(row.get("start_frame") or 0), int(row.get("end_frame") or 0)
    width = row.get("width") or row.get("video_width")
    height = row.get("height") or row.get("video_height")
    size = short_side_size(width, height, short_side)
    if row.get("clip_uri"):
        return read_frames(str(row["clip_uri"]), sample_indices(0, max(end - start, 1), count), size)
    if end <= start:
        raise ValueError(f"clip {row.get('clip_id')} has an empty frame range [{start}, {end})")
    return read_frames(str(row["uri"]), sample_indices(start, end, count), size)


def strip(frames: np.ndarray) -> np.ndarray:
    """Frames side by side as one image (a model that takes one image still sees the motion)."""
    return frames[0] if len(frames) == 1 else np.concatenate(list(frames), axis=1)
