"""The one crop and resize rule: centre crop to an aspect, as DreamDojo's loader does, then resize.

Every consumer of pixels (shards, exports, latent actions, tokenizer latents, clip planning) crops
through :func:`crop_box`, so a clip looks the same in a shard, an MP4 export and a latent. The
arithmetic is DreamDojo's human-video loader's: the kept side is truncated with ``int()`` and the
offsets are floor-centred.
"""

from __future__ import annotations

import math

import numpy as np

Box = tuple[int, int, int, int]  # (x, y, width, height) in source pixels


def crop_box(width: int, height: int, aspect: float) -> Box:
    """(x, y, w, h) of the centred crop of a `width` x `height` frame to `aspect` = w / h."""
    if width / height > aspect:
        crop_h, crop_w = height, int(height * aspect)
    elif width / height < aspect:
        crop_h, crop_w = int(width / aspect), width
    else:
        crop_h, crop_w = height, width
    crop_w, crop_h = max(1, crop_w), max(1, crop_h)
    return (width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h


def even_crop_box(width: int, height: int, aspect: float) -> Box:
    """:func:`crop_box` with even sides, as H.264 encoders need (re-centred after rounding down)."""
    _, _, w, h = crop_box(width, height, aspect)
    w, h = max(2, w // 2 * 2), max(2, h // 2 * 2)
    return (width - w) // 2, (height - h) // 2, w, h


def cover_size(src_width: int | None, src_height: int | None, width: int | None, height: int | None):
    """A decode size with the source's aspect whose centre crop still covers `width` x `height`.

    Decoding at this size (decoders scale while decoding) bounds memory by the output resolution,
    not the source's. None means decode at native size (the output is not smaller than the source).
    """
    if not (width and height and src_width and src_height):
        return None
    _, _, crop_w, crop_h = crop_box(int(src_width), int(src_height), width / height)
    scale = max(width / crop_w, height / crop_h)
    if scale >= 1.0:
        return None
    # Even sizes keep every decoder's scaler happy; +1 px of slack covers truncation in the crop.
    w = min(int(src_width), 2 * math.ceil((src_width * scale + 1) / 2))
    h = min(int(src_height), 2 * math.ceil((src_height * scale + 1) / 2))
    return w, h


def short_side_size(width: int | None, height: int | None, short_side: int) -> tuple[int, int] | None:
    """(width, height) scaled so the short side is `short_side` (even sizes); None keeps native size."""
    if not width or not height:
        return None
    width, height = int(width), int(height)
    if min(width, height) <= short_side:
        return None
    scale = short_side / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def crop_resize(frames: np.ndarray, width: int | None, height: int | None) -> np.ndarray:
    """Centre-crop (N, H, W, 3) uint8 frames to width:height and resize them to exactly that size."""
    if width is None or height is None:
        return frames
    import cv2

    n, h, w = frames.shape[:3]
    if (w, h) == (width, height):
        return frames
    x, y, cw, ch = crop_box(w, h, width / height)
    cropped = frames[:, y : y + ch, x : x + cw]
    if (cw, ch) == (width, height):
        return np.ascontiguousarray(cropped)
    interp = cv2.INTER_AREA if cw >= width else cv2.INTER_LINEAR
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        out[i] = cv2.resize(cropped[i], (width, height), interpolation=interp)
    return out


def center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Cut a `height` x `width` window from the centre of (N, H, W, C) frames (no resize)."""
    h, w = frames.shape[1:3]
    top, left = max(0, (h - height) // 2), max(0, (w - width) // 2)
    return frames[:, top : top + height, left : left + width]
