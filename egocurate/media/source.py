"""A clip row → the file and frames it names (:class:`ClipSource`): the one reading of clip rows.

Every consumer of a clip's pixels (the filter, annotate and latent-action stages, shards, both
exports, the report) resolves a row through :func:`clip_source`, whatever shape the row has:

- a clip-view row (``catalog.query``): the clip's columns, the video's ``uri`` and ``rotation``,
  and the video's coded ``video_width``/``video_height``/``video_fps``;
- a stage input row (``jobs.inputs.clips``): the clip's columns, ``uri``, ``rotation`` and
  ``video_width``/``video_height``;
- an episode row (``jobs.inputs.idm_episodes``): a video's ``uri``, coded ``width``/``height`` and
  ``rotation`` with a frame range, and no clip columns.

A transcoded clip (``clip_uri``) is read from its own file, which ffmpeg wrote upright and cropped;
a virtual clip from its video over its frame range, at the video's rate, with its crop box.
Frames come upright from :mod:`egocurate.media.decode` whichever decoder serves the file; the
``rotation`` here only turns the video's stored (coded) size into the upright one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Box = tuple[int, int, int, int]  # (x, y, width, height) in upright pixels


@dataclass(frozen=True)
class ClipSource:
    """The file to decode and the clip inside it.

    `start`/`end`: the clip's frames of `uri`, [start, end); `fps`: the rate of those frames;
    `width`/`height`: the upright size of the file's pictures (None if unknown); `rotation`: the
    video's display rotation (degrees counter-clockwise); `crop`: the clip's box in the upright
    picture (None: the whole picture).
    """

    uri: str
    start: int
    end: int
    fps: float
    width: int | None = None
    height: int | None = None
    rotation: int = 0
    crop: Box | None = None

    @property
    def num_frames(self) -> int:
        return max(0, self.end - self.start)

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the upright picture, or None."""
        return (self.width, self.height) if self.width and self.height else None

    @property
    def shown_size(self) -> tuple[int, int] | None:
        """(width, height) of the clip as shown: the crop box's, else the picture's."""
        return (self.crop[2], self.crop[3]) if self.crop else self.size


def _positive(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _rate(*values: Any) -> float | None:
    for value in values:
        try:
            rate = float(value)
        except (TypeError, ValueError):
            continue
        if rate > 0 and not math.isnan(rate):
            return rate
    return None


def upright_size(width: Any, height: Any, rotation: int) -> tuple[int | None, int | None]:
    """A stored (coded) size turned upright by `rotation` degrees."""
    w, h = _positive(width), _positive(height)
    if not (w and h):
        return None, None
    return (h, w) if int(round(int(rotation or 0) / 90.0)) % 2 else (w, h)


def clip_source(row: Mapping[str, Any]) -> ClipSource:
    """The :class:`ClipSource` of any clip row (see the module docstring for the shapes it takes).

    Raises ValueError for a row that names no file or no frame range.
    """
    if row.get("start_frame") is None or row.get("end_frame") is None:
        raise ValueError(f"clip {row.get('clip_id')} has no frame range")
    start, end = int(row["start_frame"]), int(row["end_frame"])
    rotation = int(row.get("rotation") or 0) % 360
    clip_uri = row.get("clip_uri")
    if clip_uri:  # transcoded: upright, cropped, resized and at the clip's own rate
        count = _positive(row.get("num_frames")) or max(0, end - start)
        fps = _rate(row.get("fps"), row.get("video_fps"), row.get("src_fps")) or 30.0
        return ClipSource(
            str(clip_uri), 0, count, fps, _positive(row.get("width")), _positive(row.get("height"))
        )
    uri = row.get("uri")
    if not uri:
        raise ValueError(f"clip {row.get('clip_id')} has neither `clip_uri` nor the video's `uri`")
    is_clip = "clip_id" in row
    width, height = upright_size(row.get("video_width"), row.get("video_height"), rotation)
    crop = tuple(int(v) for v in row["crop"]) if is_clip and row.get("crop") else None
    if not (width and height):
        if is_clip and crop is None:  # a clip row without its video's size: the clip is the picture
            width, height = _positive(row.get("width")), _positive(row.get("height"))
        elif not is_clip:  # an episode row: the video's stored size
            width, height = upright_size(row.get("width"), row.get("height"), rotation)
    fps = _rate(row.get("video_fps"), row.get("src_fps"), row.get("fps"))
    if fps is None:
        duration = _rate(row.get("duration_s"))
        fps = (end - start) / duration if duration else 30.0
    return ClipSource(str(uri), start, end, fps, width, height, rotation, crop)  # type: ignore[arg-type]
