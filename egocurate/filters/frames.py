"""Where a clip's frames come from, and at what size the filters decode them.

Shared by the quality and embedding stages so both read a clip the same way: from its transcoded
file when the clips stage wrote one, else from the source video over the clip's frame range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClipSource:
    """The file to decode, the clip's frame range inside it ([start, end), end exclusive), and the
    upright size and display rotation (``media.decode.read_plan`` turns frames upright)."""

    uri: str
    start: int
    end: int
    fps: float
    width: int | None
    height: int | None
    rotation: int = 0

    @property
    def num_frames(self) -> int:
        return max(0, self.end - self.start)


def _int_or_none(value: Any) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def clip_source(row: dict[str, Any]) -> ClipSource:
    """A clip row (from the `clips` input: clip columns plus the video's `uri`) as a ClipSource.

    Raises KeyError/ValueError for rows that name no file or no frame range.
    """
    start, end = int(row["start_frame"]), int(row["end_frame"])
    rotation = int(row.get("rotation") or 0) % 360
    width, height = _int_or_none(row.get("width")), _int_or_none(row.get("height"))  # clips: upright
    if not (width and height):
        width, height = _int_or_none(row.get("video_width")), _int_or_none(row.get("video_height"))
        if width and height and (rotation // 90) % 2:  # videos store the coded size
            width, height = height, width
    fps = float(row.get("fps") or 0.0)
    if not fps or math.isnan(fps):
        duration = float(row.get("duration_s") or 0.0)
        fps = (end - start) / duration if duration > 0 else 30.0
    clip_uri = row.get("clip_uri")
    if clip_uri:  # transcoded clips are written upright
        return ClipSource(str(clip_uri), 0, end - start, fps, width, height)
    uri = row.get("uri")
    if not uri:
        raise ValueError("clip row has neither `clip_uri` nor the video's `uri`")
    return ClipSource(str(uri), start, end, fps, width, height, rotation)


def scaled_size(width: int | None, height: int | None, long_side: int) -> tuple[int, int] | None:
    """(width, height) with the longer side at most `long_side`, both even; None if size unknown."""
    if not width or not height:
        return None
    scale = min(1.0, long_side / max(width, height))
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def resize_short_side(width: int | None, height: int | None, short_side: int) -> tuple[int, int] | None:
    """(width, height) with the shorter side equal to `short_side` (CLIP's resize before its crop)."""
    if not width or not height:
        return None
    scale = short_side / min(width, height)
    return max(short_side, int(round(width * scale))), max(short_side, int(round(height * scale)))
