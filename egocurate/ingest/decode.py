"""Frame access for every consumer: decord with seeking and reduced-resolution decode.

This is the one place that decodes video. Consumers ask for the frames they need at the smallest
size they need; one call should feed every consumer of a clip (DESIGN.md, performance stance).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _reader(uri: str, size: tuple[int, int] | None):
    import decord

    kwargs = {"ctx": decord.cpu(0), "num_threads": 1}
    if size is not None:
        kwargs["width"], kwargs["height"] = int(size[0]), int(size[1])
    return decord.VideoReader(uri, **kwargs)


def read_frames(uri: str, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
    """Frames at `indices` as uint8 RGB (N, H, W, 3); `size` is (width, height) of the output."""
    reader = _reader(uri, size)
    idx = [min(max(int(i), 0), len(reader) - 1) for i in indices]
    return reader.get_batch(idx).asnumpy()


def sample_indices(start_frame: int, end_frame: int, count: int) -> list[int]:
    """`count` evenly spaced frame indices in [start_frame, end_frame)."""
    if end_frame <= start_frame or count <= 0:
        return []
    span = end_frame - start_frame
    return [start_frame + int((k + 0.5) * span / count) for k in range(count)]


def read_clip(
    uri: str,
    start_frame: int,
    end_frame: int,
    num_frames: int | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Frames of [start_frame, end_frame): all of them, or `num_frames` evenly spaced."""
    if num_frames is None:
        indices = list(range(start_frame, end_frame))
    else:
        indices = sample_indices(start_frame, end_frame, num_frames)
    return read_frames(uri, indices, size)
