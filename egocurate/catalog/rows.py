"""Helpers over one row of the clip view, shared by shards and exports: where to decode a clip
from, its quality scores, and its stored latent actions aligned to the frames a consumer renders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from egocurate.catalog import tables


def first_present(*values: Any) -> Any:
    """The first value that is neither None nor an empty string."""
    for value in values:
        if value is not None and value != "":
            return value
    return None


def quality_scores(view_row: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The clip's float quality scores from the view (whatever the quality table holds)."""
    out = []
    for fld in tables.CLIP_QUALITY.schema:
        if pa.types.is_floating(fld.type) and fld.name not in ("duration_s", "fps"):
            value = view_row.get(fld.name)
            if value is not None and value == value:
                out.append((fld.name, float(value)))
    return out


def source_span(view_row: Mapping[str, Any]) -> tuple[str, int, int, float, tuple[int, int] | None]:
    """(uri, start frame, end frame, fps, (width, height)) to decode a clip from."""
    fps = float(first_present(view_row.get("fps"), view_row.get("video_fps"), 30.0))
    clip_uri = view_row.get("clip_uri")
    if clip_uri:
        n = int(view_row.get("num_frames") or 0)
        size = (view_row.get("width"), view_row.get("height"))
        return clip_uri, 0, n, fps, size if all(size) else None
    size = (view_row.get("video_width"), view_row.get("video_height"))
    return (
        view_row["uri"],
        int(view_row["start_frame"]),
        int(view_row["end_frame"]),
        fps,
        size if all(size) else None,
    )


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
