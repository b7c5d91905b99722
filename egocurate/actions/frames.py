"""Frames for the latent-action and tokenizer stages: decode, centre-crop to the model's aspect, resize.

Frames are decoded at the smallest size that still covers the model's input after cropping (the
decoder's scaler outputs that size), so a 1080p clip is never converted at full size for a 240×320
model. Every read goes through ``media.decode.read_plan`` with the plan of :func:`model_plan`, so the
frames are the same whether a stage decodes alone or shares one decode with others (``jobs.fused``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from egocurate.catalog import tables
from egocurate.media.crop import cover_size, crop_resize
from egocurate.media.decode import FramePlan, FrameRequest, read_plan
from egocurate.media.source import clip_source


def source_problem(row: Mapping[str, Any]) -> tuple[str, str] | None:
    """(error kind, message) of a clip row that names no frame range or no file that exists, else None."""
    if row.get("start_frame") is None or row.get("end_frame") is None:
        return tables.ABSURD_METADATA, "clip row has no frame range"
    try:
        uri = clip_source(row).uri
    except ValueError as exc:
        return tables.NOT_FOUND, str(exc)
    if "://" not in uri and not os.path.exists(uri):
        return tables.NOT_FOUND, f"video not found: {uri}"
    return None


def strided_indices(start_frame: int, end_frame: int, stride: int) -> list[int]:
    """Frame indices start, start+stride, … inside [start_frame, end_frame)."""
    return list(range(int(start_frame), int(end_frame), max(1, int(stride))))


def stride_for(fps: float | None, stride: int, target_fps: float | None) -> int:
    """The clip's frame stride: `stride`, or the step that brings `fps` closest to `target_fps`."""
    if target_fps and fps:
        return max(1, round(float(fps) / float(target_fps)))
    return max(1, int(stride))


def model_plan(
    uri: str,
    indices: Sequence[int],
    out_hw: tuple[int, int],
    source_size: tuple[int | None, int | None] | None = None,
) -> FramePlan:
    """What to decode for model frames at `indices`: upright frames just covering `out_hw` = (H, W).

    `source_size` is the upright (width, height) of the file's pictures (``ClipSource.size``).
    """
    width, height = source_size or (None, None)
    size = cover_size(width, height, out_hw[1], out_hw[0])
    return FramePlan(uri, FrameRequest(indices=tuple(int(i) for i in indices), size=size))


def read_model_frames(
    uri: str,
    indices: Sequence[int],
    out_hw: tuple[int, int],
    source_size: tuple[int | None, int | None] | None = None,
) -> np.ndarray:
    """uint8 frames (N, H, W, 3) at `indices`, upright, centre-cropped and resized to `out_hw` = (H, W)."""
    frames = read_plan(model_plan(uri, indices, out_hw, source_size))
    if len(frames) != len(indices):
        raise ValueError(f"decoded {len(frames)} frames, expected {len(indices)}")
    return crop_resize(frames, out_hw[1], out_hw[0])


def pair_chunks(
    uri: str,
    indices: Sequence[int],
    out_hw: tuple[int, int],
    source_size: tuple[int | None, int | None] | None = None,
    chunk_frames: int = 64,
) -> Iterator[np.ndarray]:
    """Consecutive frame pairs (f0,f1), (f1,f2), … as uint8 arrays (K, 2, H, W, 3), a chunk at a time.

    Chunks overlap by one frame, so memory stays bounded by `chunk_frames`, never by clip length.
    """
    step = max(2, int(chunk_frames)) - 1
    for begin in range(0, len(indices) - 1, step):
        frames = read_model_frames(uri, indices[begin : begin + step + 1], out_hw, source_size)
        yield np.stack([frames[:-1], frames[1:]], axis=1)


def pairs_to_tensor(pairs: np.ndarray, device: str = "cpu", dtype=None):
    """uint8 pairs (K, 2, H, W, 3) → float tensor in [0, 1] on `device` (pinned copy on CUDA)."""
    import torch

    tensor = torch.from_numpy(pairs)
    if device.startswith("cuda"):
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(dtype or torch.float32).div_(255.0)
