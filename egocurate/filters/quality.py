"""Per-clip quality scores from one decode pass: motion, static fraction, shake, blur, exposure, text.

Every score is a float column of `clip_quality`; nothing is dropped here. Thresholds are applied
when reading (see ``catalog.keep``), so changing one never needs a recompute.

Units (all at the analysis resolution, independent of the source resolution and frame rate):

- ``motion``: mean magnitude of dense optical flow (OpenCV Farneback, on frames whose long side is
  ``flow_long_side`` px, every ``flow_every``-th pair of analysed frames), in percent of the frame
  width per second. With the frame-difference
  fallback (``motion_method == "frame_diff"``) it is the mean absolute luma change per second, in
  percent of full scale; thresholds on ``motion`` assume Farneback.
- ``static_fraction``: share of analysed frame pairs with no motion: fewer than ``static_pixels``
  (0.25%) of the pixels change by more than ``static_level`` (12) luma levels. A pixel count, not
  the mean flow, so a static camera watching one moving hand is not static, and a frozen or black
  clip is.
- ``shake``: RMS of the high-frequency part of global motion (the per-pair median flow vector minus
  its 3-tap moving average over the flow pairs), in percent of the frame width per second. Null
  without flow.
- ``blur``: median Laplacian variance of the luma (long side ``analysis_long_side`` px); low is blurry.
- ``brightness``: mean luma in [0, 1]; ``dark_fraction`` / ``bright_fraction``: share of pixels at
  most 10 or at least 245 (clipped shadows / highlights).
- ``text_overlay``: likelihood in [0, 1] of burned-in text: strong edges that persist over time and
  form text-line-shaped blobs in the top, bottom or centre band (captions, watermarks, titles).
- ``frame_diff``: mean absolute luma difference between analysed frames, in levels (0-255).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from egocurate.filters.frames import scaled_size
from egocurate.media.decode import FramePlan, FrameRequest, read_plan
from egocurate.media.source import ClipSource

MotionMethod = Literal["farneback", "frame_diff"]

DARK_LEVEL = 10
BRIGHT_LEVEL = 245
# Bands (fractions of the frame height) where burned-in text usually sits.
TEXT_BANDS = {"top": (0.0, 0.16), "centre": (0.42, 0.58), "bottom": (0.84, 1.0)}
_ELLIPSE_3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
# Tuned for ~80 px frames: one iteration, a 9 px window; within ~20% of a 128 px, 2-iteration run
# on the real clips, at a quarter of its cost (see benchmarks/quality.py).
FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 9, "iterations": 1, "poly_n": 5, "poly_sigma": 1.1}


@dataclass(frozen=True)
class QualitySettings:
    """How a clip is sampled and scored (the stage's parameters, shared with the benchmark)."""

    analysis_long_side: int = 256
    flow_long_side: int = 80
    sample_fps: float = 5.0
    max_frames: int = 48
    window: int = 8
    static_level: int = 12
    static_pixels: float = 0.0025
    flow_every: int = 2
    motion_method: MotionMethod = "farneback"


def analysis_windows(
    start: int, end: int, fps: float, sample_fps: float, max_frames: int, window: int
) -> tuple[list[list[int]], int]:
    """Frame indices to analyse, as windows of consecutive samples, and the sampling stride.

    Frames are taken every ``stride = round(fps / sample_fps)`` source frames. A clip with more
    samples than ``max_frames`` is covered by evenly spaced windows of ``window`` consecutive
    samples, so the time step between paired frames stays the same for every clip length.
    """
    stride = max(1, int(round(fps / sample_fps))) if sample_fps > 0 else 1
    samples = list(range(start, end, stride))
    if len(samples) <= max_frames:
        return [samples], stride
    window = max(2, min(window, max_frames))
    count = max(1, max_frames // window)
    if count == 1:
        offsets = [(len(samples) - window) // 2]
    else:
        offsets = [int(round(k * (len(samples) - window) / (count - 1))) for k in range(count)]
    return [samples[o : o + window] for o in offsets], stride


def _luma(frames: np.ndarray) -> list[np.ndarray]:
    return [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]


def _smooth(series: np.ndarray) -> np.ndarray:
    """3-tap moving average along axis 0, edges padded by reflection."""
    if len(series) < 3:
        return np.repeat(series.mean(axis=0, keepdims=True), len(series), axis=0)
    padded = np.concatenate([series[1:2], series, series[-2:-1]])
    return (padded[:-2] + padded[1:-1] + padded[2:]) / 3.0


def _strong_gradient(gray: np.ndarray) -> np.ndarray:
    """Pixels with a strong local contrast (morphological gradient above Otsu's level, at least 48)."""
    grad = cv2.morphologyEx(gray, cv2.MORPH_GRADIENT, _ELLIPSE_3)
    level, _ = cv2.threshold(grad, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return grad >= max(level, 48)


def _text_lines(mask: np.ndarray) -> np.ndarray:
    """Pixels of text-line-shaped blobs: strokes closed horizontally into wide, short, dense boxes."""
    height, width = mask.shape
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, width // 40), 1))
    closed = cv2.morphologyEx(mask.astype(np.uint8) * 255, cv2.MORPH_CLOSE, kernel)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    w, h, area = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT], stats[:, cv2.CC_STAT_AREA]
    line = (h >= 0.02 * height) & (h <= 0.12 * height) & (w >= 2.5 * h) & (w >= 0.06 * width)
    line &= area >= 0.45 * w * h
    line[0] = False  # background
    return line[labels]


def text_overlay_score(grays: Sequence[np.ndarray], max_frames: int = 12) -> float:
    """Likelihood in [0, 1] that the frames carry burned-in text (an edge-density heuristic).

    Burned-in text is dense high-contrast edges that stay put while the scene moves, in a horizontal
    band (captions at the bottom, titles in the centre, watermarks and timestamps at the top). Edges
    present in at least 70% of the frames are closed horizontally into blobs; blobs shaped like text
    lines inside the bands count. Covering 1.5% of the frame (one caption line) scores 1.
    """
    if not grays:
        return 0.0
    step = max(1, int(math.ceil(len(grays) / max_frames)))
    picked = grays[::step]
    persistent = np.mean([_strong_gradient(g) for g in picked], axis=0) >= (0.7 if len(picked) >= 3 else 0.99)
    lines = _text_lines(persistent)
    height = lines.shape[0]
    in_band = np.zeros(height, dtype=bool)
    for lo, hi in TEXT_BANDS.values():
        in_band[int(lo * height) : int(math.ceil(hi * height))] = True
    covered = float(lines[in_band].sum()) / lines.size
    return float(np.clip(covered / 0.015, 0.0, 1.0))


def score_frames(windows: Sequence[np.ndarray], dt: float, settings: QualitySettings) -> dict[str, Any]:
    """Quality scores of decoded RGB frames, given as windows of consecutive samples `dt` s apart."""
    luma_windows = [_luma(frames) for frames in windows]
    grays = [g for window_grays in luma_windows for g in window_grays]
    height, width = grays[0].shape
    flow_size = scaled_size(width, height, settings.flow_long_side) or (width, height)
    motions, diffs, static, residuals = [], [], [], []
    method = settings.motion_method
    for window_grays in luma_windows:
        small = [cv2.resize(g, flow_size, interpolation=cv2.INTER_AREA) for g in window_grays]
        global_motion = []
        for pair, (a, b) in enumerate(zip(small[:-1], small[1:], strict=True)):
            absdiff = cv2.absdiff(a, b)
            diffs.append(float(absdiff.mean()))
            static.append(float((absdiff > settings.static_level).mean()) < settings.static_pixels)
            if method != "farneback" or pair % settings.flow_every:
                continue
            try:
                flow = cv2.calcOpticalFlowFarneback(a, b, None, flags=0, **FARNEBACK)
            except cv2.error:
                method = "frame_diff"
                continue
            scale = 100.0 / (flow_size[0] * dt)
            magnitude, _ = cv2.cartToPolar(flow[..., 0], flow[..., 1])
            motions.append(float(magnitude.mean()) * scale)
            global_motion.append(np.median(flow.reshape(-1, 2), axis=0) * scale)
        if len(global_motion) >= 2:
            series = np.asarray(global_motion, dtype=np.float64)
            residuals.extend(np.linalg.norm(series - _smooth(series), axis=1) ** 2)
    if method == "frame_diff":  # asked for, or a late fallback: the same units for every pair
        motions = [d / 255.0 * 100.0 / dt for d in diffs]
        residuals = []
    histogram = np.sum([cv2.calcHist([g], [0], None, [256], [0, 256]).reshape(-1) for g in grays], axis=0)
    pixels = float(histogram.sum())
    return {
        "motion": float(np.mean(motions)) if motions else None,
        "motion_method": method,
        "static_fraction": float(np.mean(static)) if static else None,
        "shake": float(math.sqrt(np.mean(residuals))) if residuals else None,
        "blur": float(np.median([cv2.Laplacian(g, cv2.CV_32F).var() for g in grays])),
        "brightness": float(histogram @ np.arange(256) / pixels / 255.0),
        "dark_fraction": float(histogram[: DARK_LEVEL + 1].sum() / pixels),
        "bright_fraction": float(histogram[BRIGHT_LEVEL:].sum() / pixels),
        "text_overlay": text_overlay_score(grays),
        "frame_diff": float(np.mean(diffs)) if diffs else None,
        "frames_analysed": len(grays),
    }


def quality_plan(source: ClipSource, settings: QualitySettings) -> tuple[FramePlan, list[int], float]:
    """(frames to decode, window lengths, time step between paired frames) of a clip."""
    windows, stride = analysis_windows(
        source.start, source.end, source.fps, settings.sample_fps, settings.max_frames, settings.window
    )
    flat = tuple(i for w in windows for i in w)
    size = scaled_size(source.width, source.height, settings.analysis_long_side)
    plan = FramePlan(source.uri, FrameRequest(indices=flat, size=size))
    return plan, [len(w) for w in windows], stride / source.fps


def split_windows(frames: np.ndarray, lengths: list[int], settings: QualitySettings) -> list[np.ndarray]:
    """Decoded analysis frames as windows, resized to the analysis size when decoded at native size."""
    if len(frames):
        h, w = frames.shape[1:3]
        target = scaled_size(w, h, settings.analysis_long_side)
        if target != (w, h):
            frames = np.stack([cv2.resize(f, target, interpolation=cv2.INTER_AREA) for f in frames])
    out, offset = [], 0
    for length in lengths:
        out.append(frames[offset : offset + length])
        offset += length
    return out


def decode_for_quality(source: ClipSource, settings: QualitySettings) -> tuple[list[np.ndarray], float]:
    """Decode a clip's analysis frames in one call; returns the windows of frames and their time step."""
    plan, lengths, dt = quality_plan(source, settings)
    return split_windows(read_plan(plan), lengths, settings), dt
