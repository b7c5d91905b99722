"""Frames for the latent-action and tokenizer stages: decode, centre-crop to the model's aspect, resize.

Frames are decoded at the smallest size that still covers the model's input after cropping (decord
scales while decoding), so a 1080p clip is never decoded at full size for a 240×320 model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from egocurate.ingest.decode import read_frames


def crop_box(width: int, height: int, aspect: float) -> tuple[int, int, int, int]:
    """(x0, y0, w, h) of the largest centred box of `aspect` (width / height) inside width×height."""
    if width / height > aspect:
        w, h = max(1, round(height * aspect)), height
    else:
        w, h = width, max(1, round(width / aspect))
    return (width - w) // 2, (height - h) // 2, w, h


def decode_size(width: int | None, height: int | None, out_hw: tuple[int, int]) -> tuple[int, int] | None:
    """(width, height) to decode at so the centre crop still covers `out_hw`; None means native size."""
    if not width or not height:
        return None
    out_h, out_w = out_hw
    _, _, cw, ch = crop_box(int(width), int(height), out_w / out_h)
    scale = max(out_w / cw, out_h / ch)
    if scale >= 1.0:
        return None
    # Even sizes keep every decoder's scaler happy; +1 px of slack covers rounding in the crop.
    dw = min(int(width), 2 * math.ceil((width * scale + 1) / 2))
    dh = min(int(height), 2 * math.ceil((height * scale + 1) / 2))
    return dw, dh


def crop_resize(frames: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Centre-crop uint8 frames (N, H, W, 3) to the aspect of `out_hw` and resize to it (area filter)."""
    out_h, out_w = out_hw
    n, h, w, _ = frames.shape
    x0, y0, cw, ch = crop_box(w, h, out_w / out_h)
    cropped = frames[:, y0 : y0 + ch, x0 : x0 + cw]
    if (ch, cw) == (out_h, out_w):
        return np.ascontiguousarray(cropped)
    interp = cv2.INTER_AREA if ch >= out_h else cv2.INTER_LINEAR
    out = np.empty((n, out_h, out_w, 3), dtype=np.uint8)
    for i in range(n):
        out[i] = cv2.resize(cropped[i], (out_w, out_h), interpolation=interp)
    return out


def strided_indices(start_frame: int, end_frame: int, stride: int) -> list[int]:
    """Frame indices start, start+stride, … inside [start_frame, end_frame)."""
    return list(range(int(start_frame), int(end_frame), max(1, int(stride))))


def stride_for(fps: float | None, stride: int, target_fps: float | None) -> int:
    """The clip's frame stride: `stride`, or the step that brings `fps` closest to `target_fps`."""
    if target_fps and fps:
        return max(1, round(float(fps) / float(target_fps)))
    return max(1, int(stride))


def read_model_frames(
    uri: str,
    indices: Sequence[int],
    out_hw: tuple[int, int],
    source_size: tuple[int | None, int | None] = (None, None),
    rotation: int = 0,
) -> np.ndarray:
    """uint8 frames (N, H, W, 3) at `indices`, upright, centre-cropped and resized to `out_hw` = (H, W)."""
    width, height = source_size
    if int(rotation or 0) % 180 == 90:  # the stored size is sideways; crop and resize the upright frame
        width, height = height, width
    size = decode_size(width, height, out_hw)
    frames = read_frames(uri, list(indices), size, rotation=int(rotation or 0))
    if len(frames) != len(indices):
        raise ValueError(f"decoded {len(frames)} frames, expected {len(indices)}")
    return crop_resize(frames, out_hw)


def pair_chunks(
    uri: str,
    indices: Sequence[int],
    out_hw: tuple[int, int],
    source_size: tuple[int | None, int | None] = (None, None),
    chunk_frames: int = 64,
    rotation: int = 0,
) -> Iterator[np.ndarray]:
    """Consecutive frame pairs (f0,f1), (f1,f2), … as uint8 arrays (K, 2, H, W, 3), a chunk at a time.

    Chunks overlap by one frame, so memory stays bounded by `chunk_frames`, never by clip length.
    """
    step = max(2, int(chunk_frames)) - 1
    for begin in range(0, len(indices) - 1, step):
        frames = read_model_frames(uri, indices[begin : begin + step + 1], out_hw, source_size, rotation)
        yield np.stack([frames[:-1], frames[1:]], axis=1)


def pairs_to_tensor(pairs: np.ndarray, device: str = "cpu", dtype=None):
    """uint8 pairs (K, 2, H, W, 3) → float tensor in [0, 1] on `device` (pinned copy on CUDA)."""
    import torch

    tensor = torch.from_numpy(pairs)
    if device.startswith("cuda"):
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(dtype or torch.float32).div_(255.0)
