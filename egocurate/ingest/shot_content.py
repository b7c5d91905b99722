"""The ``content`` shot detector: hard cuts, dissolves and fades from cheap 64x48 frames.

Speed comes from decoding less (see :class:`egocurate.media.scan.VideoScanner`): the coarse pass
lets the decoder drop non-reference frames (about half of an x264 stream with B-frames; dropping all
B-frames instead corrupts the P-frames that reference them) and skip the loop filter; frames are
scaled to 64x48 by a cached swscale context. With N threads the video is cut at keyframes into N
parts that are decoded and featurised in parallel (PyAV and numpy release the GIL); the results do
not depend on the thread count (for closed-GOP streams, which cameras and x264 write by default;
an open GOP may lose its leading B-frames at a part boundary). A cut that falls in a gap wider than
``max_gap`` frames between decoded frames is then located exactly by decoding only that gap.
Skipping the loop filter lets P-frames drift a little until the next keyframe snaps the picture
back; that snap can look like a weak cut. And a whip pan of a head-mounted camera spreads over a few
heavily motion-blurred frames, often the non-reference ones the coarse pass drops, so that between
the frames it keeps the pan is one isolated change, however strong. Every cut is therefore
re-checked on exactly decoded consecutive frames (:func:`_verify_cuts`), where the pan is a ramp of
changes and fails the isolation test a cut must pass.

Per decoded frame we keep an HSV histogram (hue with a grey bin, saturation, value), a 16x12 colour
thumbnail, the mean luma, and the change from the previous decoded frame: histogram distance,
motion-compensated pixel difference (global shift by phase correlation) and the edge-change ratio.
Then, with thresholds adapted to the footage around each candidate:

- **Fades**: short runs of near-black or near-white frames with the luminance ramps into and
  out of them.
- **Hard cuts**: a change that clears a floor, stands ``cut_ratio`` times above the median change
  around it (camera motion raises all changes together), ``cut_isolation`` times above the changes
  just before and after (a whip pan spreads over frames), on the coarse frames and again on exact
  consecutive ones, and persists (a flash comes back).
- **Dissolves**: at several transition lengths, frames half a length before and after differ much
  more than each of them differs from frames further out (the shots either side are stable); the
  frames between must be linear blends of the two ends with a weight that grows linearly in time.
  A pan or a head turn is not a blend, which is what keeps egocentric motion out.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from egocurate.ingest.shot_types import Transition, VideoTiming
from egocurate.media.scan import VideoScanner, prefetch


@dataclass(frozen=True)
class ContentParams:
    """Knobs of the content detector (defaults tuned on seeds 0-3 of benchmarks/shot_bench_data;
    ``linear_relax_score`` on the tuning part of benchmarks/shot_real_data, never its reporting part)."""

    decode: Literal["reference", "all"] = "reference"
    size: tuple[int, int] = (64, 48)
    fast: bool = True
    threads: int = 0  # 1: one thread; N > 1: the video cut at keyframes into N parts, in parallel; 0: auto
    max_gap: int = 2  # cuts in wider gaps between decoded frames are located by decoding the gap
    cut_threshold: float = 0.10  # minimum consecutive-frame change for a cut
    cut_ratio: float = 2.2  # ... and how far it must stand above the local level of change
    cut_isolation: float = 2.2  # ... and above the changes just before and after it
    # Cuts weaker than this are re-checked on exact consecutive frames: all of them, since a whip pan
    # whose most blurred frames the coarse pass dropped looks like one isolated change there.
    verify_below: float = float("inf")
    verify_keep: float = 0.5  # ... and kept when the exact change is at least this share of it
    sure_cut: float = 0.40  # a cut's change that gives it full confidence
    gradual_scales_s: tuple[float, ...] = (0.4, 0.7, 1.0, 1.4)  # transition lengths looked for
    gradual_threshold: float = 0.25  # minimum contrast between the frames before and after
    gradual_ratio: float = 1.5  # ... over the change within the shots on either side
    blend_residual: float = 0.35  # how well a blend of before/after must explain a dissolve
    blend_linear: float = 0.98  # correlation of the blend weight with time
    blend_linear_strong: float = 0.93  # ... enough for candidates whose score reaches linear_relax_score
    linear_relax_score: float = 0.45  # above every head-motion candidate of the real tuning part (0.374)
    strong_score: float = 0.35  # a dissolve's score that gives it full confidence
    dark_luma: float = 20.0  # mean luma (0-255) under which a frame counts as black (over 255 - it: white)
    max_fade_s: float = 1.5  # longest fade-out or fade-in ramp
    max_black_s: float = 3.0  # longer dark stretches are dark footage, not a fade
    min_shot_s: float = 0.3  # transitions closer than this merge into one
    storage_options: dict | None = None


# ----------------------------------------------------------------------------------------- features
@dataclass
class _Features:
    """Per decoded frame features, sorted by frame index."""

    index: np.ndarray  # (M,) frame indices
    hist: np.ndarray  # (M, 40) float32, three blocks each summing to 1
    thumb: np.ndarray  # (M, 12, 16, 3) uint8
    luma: np.ndarray  # (M,) mean luma 0-255
    step: np.ndarray  # (M,) change from the previous decoded frame (0 for the first)
    step_parts: np.ndarray  # (M, 4) hist, pixel, compensated pixel, edge change


_EDGE_THRESHOLD = 40.0  # central-difference gradient (L1, 0-510) above which a pixel is an edge
_MAX_SHIFT = (16, 21)  # largest global shift (rows, cols) at 64x48 treated as camera motion


def _hist_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean over the three blocks of half the L1 distance: 0 (same) to 1 (disjoint)."""
    return np.abs(a - b).sum(axis=-1) / 6.0


_WINDOWS: dict[tuple[int, int], np.ndarray] = {}


def _hann(h: int, w: int) -> np.ndarray:
    if (h, w) not in _WINDOWS:
        _WINDOWS[(h, w)] = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    return _WINDOWS[(h, w)]


def _frame_batch(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame features of a batch of RGB thumbnails (n, H, W, 3), computed together."""
    n, h, w, _ = rgb.shape
    tall = rgb.reshape(n * h, w, 3)
    # HSV histogram on every other pixel (768 of a 64x48 frame are plenty for 40 bins)
    hsv = cv2.cvtColor(np.ascontiguousarray(tall[::2, ::2]), cv2.COLOR_RGB2HSV).reshape(n, -1, 3)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    chroma = (sat > 40) & (val > 40)
    codes = np.concatenate([np.where(chroma, hue // 12, 15), 16 + (sat >> 5), 24 + (val >> 4)], axis=1)
    codes = codes.astype(np.intp) + 40 * np.arange(n)[:, None]
    hist = (np.bincount(codes.ravel(), minlength=40 * n).reshape(n, 40) / float(hsv.shape[1])).astype(
        np.float32
    )
    gray8 = cv2.cvtColor(tall, cv2.COLOR_RGB2GRAY)
    gray = gray8.reshape(n, h, w).astype(np.float32)
    thumb = cv2.resize(tall, (16, n * 12), interpolation=cv2.INTER_AREA).reshape(n, 12, 16, 3)
    grad = np.abs(gray[:, 1:-1, 2:] - gray[:, 1:-1, :-2]) + np.abs(gray[:, 2:, 1:-1] - gray[:, :-2, 1:-1])
    edges = grad > _EDGE_THRESHOLD
    padded = np.pad(edges, ((0, 0), (1, 1), (1, 1)))
    grown = edges.copy()
    for dy in range(3):
        for dx in range(3):
            if dy != 1 or dx != 1:
                grown |= padded[:, dy : dy + edges.shape[1], dx : dx + edges.shape[2]]
    luma = gray.mean(axis=(1, 2))
    spectrum = np.fft.rfft2((gray - luma[:, None, None].astype(np.float32)) * _hann(h, w))
    return {"hist": hist, "thumb": thumb, "luma": luma, "gray": gray, "edges": edges, "grown": grown,
            "spectrum": spectrum}  # fmt: skip


def _take(batch: dict[str, np.ndarray], sl: slice) -> dict[str, np.ndarray]:
    return {k: v[sl] for k, v in batch.items()}


def _concat(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def _pair_steps(batch: dict[str, np.ndarray]) -> np.ndarray:
    """(n-1, 4) changes between consecutive frames of a batch: histogram, pixel, motion-compensated
    pixel and edge-change ratio."""
    n = len(batch["hist"])
    if n < 2:
        return np.zeros((0, 4))
    dh = _hist_dist(batch["hist"][:-1], batch["hist"][1:])
    thumb = batch["thumb"].reshape(n, -1).astype(np.int16)
    dp = np.abs(thumb[1:] - thumb[:-1]).mean(axis=1) / 255.0
    # edge change ratio: edges of one frame not near any edge of the other
    e, g = batch["edges"], batch["grown"]
    n_prev, n_cur = e[:-1].sum(axis=(1, 2)), e[1:].sum(axis=(1, 2))
    entering = (e[1:] & ~g[:-1]).sum(axis=(1, 2)) / np.maximum(n_cur, 1)
    exiting = (e[:-1] & ~g[1:]).sum(axis=(1, 2)) / np.maximum(n_prev, 1)
    ecr = np.maximum(entering, exiting)
    ecr = np.where((n_prev == 0) & (n_cur == 0), 0.0, np.where((n_prev == 0) | (n_cur == 0), 1.0, ecr))
    # global shift by phase correlation, then the pixel difference that the shift does not explain
    spec = batch["spectrum"]
    cross = spec[1:] * np.conj(spec[:-1])
    cross /= np.abs(cross) + 1e-6
    h, w = batch["gray"].shape[1:]
    corr = np.fft.irfft2(cross, s=(h, w))
    peak = corr.reshape(n - 1, -1).argmax(axis=1)
    dys, dxs = np.divmod(peak, w)
    dys = np.where(dys > h // 2, dys - h, dys)
    dxs = np.where(dxs > w // 2, dxs - w, dxs)
    gray = batch["gray"]
    inner = gray[:, 1:-1, 1:-1]
    dm = np.abs(inner[1:] - inner[:-1]).mean(axis=(1, 2)) / 255.0  # no shift
    for k in np.nonzero((dys != 0) | (dxs != 0))[0]:
        dy, dx = int(dys[k]), int(dxs[k])
        if abs(dy) > _MAX_SHIFT[0] or abs(dx) > _MAX_SHIFT[1]:
            continue  # too big for camera motion: the unshifted difference stands
        prev, cur = gray[k], gray[k + 1]
        # cur(y, x) ~ prev(y - dy, x - dx); compare on the overlap, away from the border
        y0, y1 = max(dy, 0) + 1, h + min(dy, 0) - 1
        x0, x1 = max(dx, 0) + 1, w + min(dx, 0) - 1
        diff = np.abs(cur[y0:y1, x0:x1] - prev[y0 - dy : y1 - dy, x0 - dx : x1 - dx])
        if diff.size:  # a wrong shift must not hurt: keep the smaller difference
            dm[k] = min(dm[k], float(diff.mean()) / 255.0)
    return np.stack([dh, dp, dm, ecr], axis=1)


def _combine(parts: np.ndarray) -> np.ndarray:
    """One consecutive-change score from (hist, pixel, compensated pixel, edge change)."""
    parts = np.atleast_2d(parts)
    return parts[:, 0] + 2.0 * parts[:, 2] + 0.25 * parts[:, 3]


class _FeatureBuilder:
    """Accumulates per-frame features of frames arriving in display order, in bounded batches.

    Only small per-frame summaries are kept (a 40-bin histogram, a 16x12 thumbnail, mean luma and
    the change from the previous frame); the 64x48 frames live no longer than one batch.
    """

    def __init__(self, batch_frames: int = 128):
        self.batch_frames = batch_frames
        self._pending: list[tuple[int, np.ndarray]] = []
        self._last: dict[str, np.ndarray] | None = None
        self._index: list[np.ndarray] = []
        self._hist: list[np.ndarray] = []
        self._thumb: list[np.ndarray] = []
        self._luma: list[np.ndarray] = []
        self._parts: list[np.ndarray] = []

    def add(self, index: int, rgb: np.ndarray) -> None:
        self._pending.append((index, rgb))
        if len(self._pending) >= self.batch_frames:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        index = np.fromiter((i for i, _ in self._pending), np.int64, len(self._pending))
        batch = _frame_batch(np.stack([f for _, f in self._pending]))
        self._pending = []
        if self._last is None:
            parts = np.vstack([np.zeros((1, 4)), _pair_steps(batch)])
        else:
            parts = _pair_steps(_concat(self._last, batch))
        self._last = _take(batch, slice(-1, None))
        self._index.append(index)
        self._hist.append(batch["hist"])
        self._thumb.append(batch["thumb"])
        self._luma.append(batch["luma"])
        self._parts.append(parts)

    def build(self) -> _Features:
        self._flush()
        if not self._index:
            empty = np.zeros(0)
            return _Features(
                np.zeros(0, np.int64), np.zeros((0, 40), np.float32), np.zeros((0, 12, 16, 3), np.uint8),
                empty, empty, np.zeros((0, 4)),
            )  # fmt: skip
        parts = np.concatenate(self._parts)
        step = _combine(parts)
        step[0] = 0.0
        return _Features(np.concatenate(self._index), np.concatenate(self._hist), np.concatenate(self._thumb),
                         np.concatenate(self._luma), step, parts)  # fmt: skip


def _splice(base: _Features, extra: _Features) -> _Features:
    """`base` with the consecutive frames of `extra` inserted (they replace base samples in their span).

    The first frame of `extra` keeps base's step (measured against the frame before the span).
    """
    lo, hi = int(extra.index[0]), int(extra.index[-1])
    keep_before = base.index < lo
    keep_after = base.index > hi
    first = int(np.searchsorted(base.index, lo))
    parts_extra = extra.step_parts.copy()
    step_extra = extra.step.copy()
    if first < len(base.index) and base.index[first] == lo:
        parts_extra[0], step_extra[0] = base.step_parts[first], base.step[first]

    def join(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([a[keep_before], b, a[keep_after]])

    return _Features(
        join(base.index, extra.index),
        join(base.hist, extra.hist),
        join(base.thumb, extra.thumb),
        join(base.luma, extra.luma),
        join(base.step, step_extra),
        join(base.step_parts, parts_extra),
    )


# ---------------------------------------------------------------------------------------- detection
def _local_level(values: np.ndarray, radius: int, exclude: int) -> np.ndarray:
    """Median of `values` within +-radius samples, leaving out the +-exclude samples around each."""
    m = len(values)
    if m == 0:
        return np.zeros(0)
    padded = np.pad(values.astype(np.float64), radius, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1)
    keep = np.ones(2 * radius + 1, bool)
    keep[radius - exclude : radius + exclude + 1] = False
    return np.median(windows[:, keep], axis=1)


def _cut_candidates(f: _Features, p: ContentParams) -> list[int]:
    """Sample positions s where the change from s-1 to s is a hard cut.

    The change must clear an absolute floor, stand `cut_ratio` times above the median change around
    it (camera motion raises all changes together), be `cut_isolation` times the change just before
    and just after (a whip pan or motion blur spreads over several frames), and persist (after a
    flash or a blink the next frame is back to the one before).
    """
    m = len(f.index)
    if m < 3:
        return []
    level = _local_level(f.step, radius=8, exclude=1)
    found = []
    for s in range(1, m):
        c = f.step[s]
        if c < p.cut_threshold or c < p.cut_ratio * level[s] + 0.05:
            continue
        neighbours = max(f.step[s - 1] if s > 1 else 0.0, f.step[s + 1] if s + 1 < m else 0.0)
        if c < p.cut_isolation * neighbours:
            continue
        if s + 1 < m:
            back = _dist(f, np.array([s - 1]), np.array([s + 1]))[0]
            jump = _dist(f, np.array([s - 1]), np.array([s]))[0]
            if back < 0.35 * jump:
                continue
        found.append(s)
    return found


def _nearest(index: np.ndarray, frames: np.ndarray) -> np.ndarray:
    pos = np.clip(np.searchsorted(index, frames), 0, len(index) - 1)
    left = np.clip(pos - 1, 0, len(index) - 1)
    choose_left = np.abs(index[left] - frames) < np.abs(index[pos] - frames)
    return np.where(choose_left, left, pos)


def _dist(f: _Features, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Appearance distance of samples a and b: histogram distance plus thumbnail difference."""
    pix = np.abs(f.thumb[a].astype(np.int16) - f.thumb[b].astype(np.int16)).mean(axis=(-3, -2, -1)) / 255.0
    return _hist_dist(f.hist[a], f.hist[b]) + pix


def _blend_fit(f: _Features, a: int, b: int) -> tuple[float, np.ndarray]:
    """How well samples strictly between a and b are blends of sample a and sample b.

    Returns the mean residual (relative to |A - B|) and the blend weights of B (0 at A, 1 at B).
    """
    A = f.thumb[a].astype(np.float32).ravel()
    B = f.thumb[b].astype(np.float32).ravel()
    d = B - A
    norm = float(d @ d)
    if b - a < 2 or norm < 1e-6:
        return 1.0, np.zeros(0)
    X = f.thumb[a + 1 : b].reshape(b - a - 1, -1).astype(np.float32) - A
    alpha = X @ d / norm
    resid = np.linalg.norm(X - alpha[:, None] * d[None, :], axis=1) / np.sqrt(norm)
    return float(np.median(resid)), alpha


def _ramp_span(times: np.ndarray, alpha: np.ndarray) -> tuple[int, int] | None:
    """Frames [start, end) of the ramp that best fits blend weights `alpha` at frame `times`, or None.

    The model is flat, then linear, then flat again, with free levels (least squares over every
    whole-frame start s and end e): motion inside a shot (a hand, the camera) projects onto the blend
    direction and shifts the flat parts off 0 and 1, which makes the first and last weights between
    0.05 and 0.95 start early or end late. A ramp from frame s (still pure A) to frame e (the first
    pure B) mixes frames s + 1 .. e - 1.
    """
    lo, hi = int(times[0]), int(times[-1])
    if hi - lo < 3 or len(times) < 4:
        return None
    y = np.clip(alpha, -0.25, 1.25)
    cand = np.arange(lo, hi + 1, dtype=np.float64)
    s, e = np.meshgrid(cand, cand, indexing="ij")
    ok = e - s >= 2
    s, e = s[ok], e[ok]
    ramp = np.clip((times[None, :] - s[:, None]) / (e - s)[:, None], 0.0, 1.0)
    rc = ramp - ramp.mean(axis=1, keepdims=True)
    var = (rc**2).sum(axis=1)
    cov = rc @ (y - y.mean())
    fit = np.where((cov > 0) & (var > 1e-9), cov**2 / np.maximum(var, 1e-9), -1.0)
    best = int(np.argmax(fit))
    return int(s[best]) + 1, int(e[best])


def _fades(f: _Features, fps: float, p: ContentParams) -> list[Transition]:
    """Fades through black and through white: short runs of near-black (near-white) frames with the
    luminance ramps into and out of them.

    A run longer than ``max_black_s`` is dark (blown-out) footage, not a fade; a ramp must reach at
    least twice the darkness threshold away from black (white) on one side, or the run has no
    neighbour to fade from. A fade through white is found the same way on 255 - luma.
    """
    fades = _flat_runs(f.index, f.luma, fps, p) + _flat_runs(f.index, 255.0 - f.luma, fps, p)
    return sorted(fades, key=lambda t: t.start_frame)


def _flat_runs(idx: np.ndarray, luma: np.ndarray, fps: float, p: ContentParams) -> list[Transition]:
    """Fades through black of the luminance `luma` (see :func:`_fades`)."""
    m = len(idx)
    dark = luma < p.dark_luma
    max_ramp = int(round(p.max_fade_s * fps))
    max_black = int(round(p.max_black_s * fps))
    out = []
    s = 0
    while s < m:
        if not dark[s]:
            s += 1
            continue
        e = s
        while e + 1 < m and dark[e + 1]:
            e += 1
        lo = s
        while lo > 0 and luma[lo - 1] > luma[lo] + 0.3 and idx[s] - idx[lo - 1] <= max_ramp:
            lo -= 1
        hi = e
        while hi + 1 < m and luma[hi + 1] > luma[hi] + 0.3 and idx[hi + 1] - idx[e] <= max_ramp:
            hi += 1
        peak = max(luma[lo], luma[hi])
        if idx[e] - idx[s] <= max_black and peak >= 2 * p.dark_luma:
            start = int(idx[lo])
            end = int(idx[hi + 1]) if hi + 1 < m else int(idx[hi]) + 1
            out.append(Transition(start, end, "fade", float(peak - luma[s : e + 1].min())))
        s = hi + 1
    return out


def _cuts(f: _Features, p: ContentParams) -> list[Transition]:
    return [
        Transition(int(f.index[s]), int(f.index[s]), "cut", float(f.step[s])) for s in _cut_candidates(f, p)
    ]


def _dissolves(f: _Features, fps: float, p: ContentParams, blocked: list[Transition]) -> list[Transition]:
    """Multi-scale long-range contrast peaks, verified as blends of what comes before and after.

    For a transition of length L centred on a frame, `contrast` compares the frames L/2 before and
    after it, `stability` how much each of those changes over the next L/3 further out. A dissolve
    has high contrast and stable shots around it; a pan has both high. A candidate is kept when the
    frames in between are linear blends of its two ends (small residual) whose weight grows
    linearly with time; the blend weights then give the transition's frames.
    """
    idx = f.index
    m = len(idx)
    rows = []
    for length_s in p.gradual_scales_s:
        length = length_s * fps
        half = length / 2 + 2
        reach = max(4.0, length / 3)
        inside_video = (idx - half - reach >= idx[0]) & (idx + half + reach <= idx[-1])
        a = _nearest(idx, idx - half)
        b = _nearest(idx, idx + half)
        a2 = _nearest(idx, idx - half - reach)
        b2 = _nearest(idx, idx + half + reach)
        contrast = _dist(f, a, b)
        stability = np.maximum(_dist(f, a2, a), _dist(f, b, b2))
        score = contrast - p.gradual_ratio * stability
        ok = (score > 0) & (contrast >= p.gradual_threshold) & (b - a >= 3) & inside_video
        for s in np.nonzero(ok)[
            0
        ]:  # every candidate, best first: a peak that fails may have a neighbour that fits
            rows.append((float(score[s]), float(contrast[s]), int(a[s]), int(b[s])))
    rows.sort(reverse=True)
    spans = [(t.start_frame - 2, t.end_frame + 2) for t in blocked]
    found = []
    for score, _contrast, a, b in rows:
        fa, fb = int(idx[a]), int(idx[b])
        if any(fa < hi and lo < fb for lo, hi in spans):
            continue
        resid, alpha = _blend_fit(f, a, b)
        if resid > p.blend_residual or alpha.size < 2:
            continue
        linear = float(np.corrcoef(alpha, idx[a + 1 : b])[0, 1])
        # The blend weight grows linearly with time in a dissolve; a weaker fit needs a stronger
        # contrast. A fast head turn (motion blur between two views) fits a blend with a bent weight
        # curve: on the real tuning part such candidates reach a score of 0.374, the transitions that
        # need the weaker fit 0.556 or more (see linear_relax_score).
        relaxed = linear >= p.blend_linear_strong and score >= p.linear_relax_score
        if linear < p.blend_linear and not relaxed:
            continue
        inside = np.nonzero((alpha > 0.05) & (alpha < 0.95))[0]
        if inside.size == 0:
            continue
        start = int(idx[a + 1 + inside[0]])
        end = int(idx[a + 1 + inside[-1] + 1]) if a + 2 + inside[-1] < m else int(idx[-1]) + 1
        ramp = _ramp_span(idx[a : b + 1].astype(np.float64), np.concatenate([[0.0], alpha, [1.0]]))
        if ramp is not None:  # the ramp that best fits the weights: robust to motion inside either shot
            start, end = ramp
        spans.append((fa, fb))
        found.append(Transition(start, end, "dissolve", score))
    return found


def _detect(f: _Features, fps: float, p: ContentParams) -> list[Transition]:
    """Fades first (their dark frames would look like cuts), then cuts, then dissolves elsewhere."""
    if len(f.index) < 3:
        return []
    fps = fps or 30.0
    fades = _fades(f, fps, p)
    cuts = [
        c for c in _cuts(f, p)
        if not any(t.start_frame - 1 <= c.start_frame <= t.end_frame + 1 for t in fades)
    ]  # fmt: skip
    dissolves = _dissolves(f, fps, p, fades + cuts)
    transitions = sorted(fades + cuts + dissolves, key=lambda t: t.start_frame)
    return _merge(transitions, int(round(p.min_shot_s * fps)))


def _merge(transitions: list[Transition], min_gap: int) -> list[Transition]:
    """Transitions closer than `min_gap` frames become one (a shot that short is no shot)."""
    out: list[Transition] = []
    for t in transitions:
        if out and t.start_frame - out[-1].end_frame < min_gap:
            prev = out[-1]
            if prev.is_cut and t.is_cut:
                out[-1] = prev if prev.score >= t.score else t
            else:
                kind = prev.kind if not prev.is_cut else t.kind
                out[-1] = Transition(
                    prev.start_frame, max(prev.end_frame, t.end_frame), kind, max(prev.score, t.score)
                )
            continue
        out.append(t)
    return out


def _features_of(frames) -> _Features:
    """Features of (index, RGB thumbnail) pairs in display order."""
    builder = _FeatureBuilder()
    for index, rgb in frames:
        builder.add(index, rgb)
    return builder.build()


def _refine_cuts(
    scanner: VideoScanner, feats: _Features, transitions: list[Transition], max_gap: int
) -> tuple[_Features, list[Transition], int]:
    """Decode every frame of the wide gaps that cuts fell into; move each cut to the biggest step."""
    wide = []
    for t in transitions:
        pos = int(np.searchsorted(feats.index, t.start_frame))
        if t.is_cut and 0 < pos < len(feats.index) and feats.index[pos] - feats.index[pos - 1] > max_gap:
            wide.append((int(feats.index[pos - 1]), int(feats.index[pos]) + 1))
    if not wide:
        return feats, transitions, 0
    frames = dict(scanner.decode_ranges(wide))
    for a, b in wide:
        extra = _features_of((i, frames[i]) for i in range(a, b) if i in frames)
        if len(extra.index) >= 2:
            feats = _splice(feats, extra)
    refined = []
    for t in transitions:
        if t.is_cut:
            pos = int(np.searchsorted(feats.index, t.start_frame))
            lo = max(1, pos - max_gap * 4)
            seg = feats.step[lo : pos + 1]
            k = lo + int(np.argmax(seg)) if seg.size else pos
            t = Transition(int(feats.index[k]), int(feats.index[k]), "cut", t.score)
        refined.append(t)
    return feats, refined, len(frames)


def _verify_cuts(
    scanner: VideoScanner, feats: _Features, transitions: list[Transition], p: ContentParams
) -> tuple[list[Transition], int]:
    """Re-measure cuts on exactly decoded consecutive frames (loop filter on), and place them.

    In fast mode, P-frames drift until a keyframe restores the picture, and that jump can pass for a
    weak cut; the coarse pass also compares frames two apart, which folds a whip pan into one step
    (the non-reference frames it drops are often the most blurred ones), however strong.
    Every frame from the one before the previous decoded frame to the one after the cut is decoded
    exactly. The cut moves to the biggest consecutive change there, and stays when that change
    clears ``cut_threshold``, keeps ``verify_keep`` of the coarse one and is ``cut_isolation``
    times the changes just before and after it.
    """
    to_check = []
    for t in transitions:
        pos = int(np.searchsorted(feats.index, t.start_frame))
        if t.is_cut and t.score < p.verify_below and 0 < pos < len(feats.index):
            to_check.append((t, int(feats.index[pos - 1])))
    if not (p.fast or p.decode == "reference") or not to_check:
        return transitions, 0
    exact = copy.copy(scanner)
    exact.fast = False
    frames = dict(
        exact.decode_ranges([(max(prev - 1, 0), t.start_frame + 2) for t, prev in to_check], "nonref")
    )
    replaced: dict[int, Transition | None] = {}
    for t, prev in to_check:
        span = [i for i in range(max(prev - 1, 0), t.start_frame + 2) if i in frames]
        if len(span) != len(range(max(prev - 1, 0), min(t.start_frame + 2, scanner.num_frames))):
            continue  # cannot re-check: keep the coarse verdict
        changes = _combine(_pair_steps(_frame_batch(np.stack([frames[i] for i in span]))))
        inside = [k for k in range(len(changes)) if prev <= span[k] and span[k + 1] <= t.start_frame]
        k = max(inside, key=lambda j: changes[j])
        neighbours = max(changes[k - 1] if k > 0 else 0.0, changes[k + 1] if k + 1 < len(changes) else 0.0)
        change = float(changes[k])
        keep = (
            change >= max(p.cut_threshold, p.verify_keep * t.score) and change >= p.cut_isolation * neighbours
        )
        replaced[t.start_frame] = Transition(span[k + 1], span[k + 1], "cut", t.score) if keep else None
    out = []
    for t in transitions:
        if t.is_cut and t.start_frame in replaced:
            if replaced[t.start_frame] is not None:
                out.append(replaced[t.start_frame])
        else:
            out.append(t)
    return out, len(frames)


def _scan_part(
    scanner: VideoScanner, mode: str, start: int | None, stop: int | None, threads: int
) -> tuple[_Features, np.ndarray | None, np.ndarray | None]:
    """Features of the frames of one part, keyed by pts, with the part's first and last thumbnail."""
    frames = scanner.scan(mode, start, stop)  # type: ignore[arg-type]
    if threads > 1:  # decode on a second thread, beside the feature work
        frames = prefetch(frames, depth=256)
    builder = _FeatureBuilder()
    first = last = None
    for pts, rgb in frames:
        if first is None:
            first = rgb
        last = rgb
        builder.add(pts, rgb)
    return builder.build(), first, last


def _coarse_pass(path: str, p: ContentParams, threads: int) -> tuple[VideoScanner, _Features]:
    """Features of the frames the decoder keeps, in display order, indexed by frame number.

    With several threads the video is cut at keyframes into one part per thread, and the parts are
    decoded and featurised in parallel (PyAV and numpy release the GIL); a short video with no
    keyframe to cut at is decoded on one thread beside the feature work.
    """
    mode = "nonref" if p.decode == "reference" else "none"

    def scanner() -> VideoScanner:
        return VideoScanner(path, p.size, fast=p.fast, threads=1, storage_options=p.storage_options)

    points = scanner().split_points(threads) if threads > 1 else []
    bounds = list(zip([None, *points], [*points, None], strict=True))
    scanners = [scanner() for _ in bounds]
    if len(bounds) == 1:
        results = [_scan_part(scanners[0], mode, None, None, threads)]
    else:
        with ThreadPoolExecutor(len(bounds), thread_name_prefix="egocurate-shots") as pool:
            results = list(
                pool.map(lambda job: _scan_part(job[0], mode, *job[1], 1), zip(scanners, bounds, strict=True))
            )
    whole = VideoScanner.merged(scanners)
    pieces = [(f, first, last) for f, first, last in results if len(f.index)]
    if not pieces:
        return whole, results[0][0]
    for (_, _, last), (f, first, _) in zip(pieces, pieces[1:], strict=False):
        parts = _pair_steps(_frame_batch(np.stack([last, first])))  # the step across the junction
        f.step_parts[0], f.step[0] = parts[0], _combine(parts)[0]
    fs = [f for f, _, _ in pieces]
    feats = _Features(
        *(np.concatenate([getattr(f, name) for f in fs]) for name in _Features.__dataclass_fields__)
    )
    feats.index = whole.index_of(feats.index)
    return whole, feats


def with_confidence(t: Transition, p: ContentParams) -> Transition:
    """`t` with a 0-1 confidence: a cut's change against ``sure_cut``, a dissolve's score against
    ``strong_score`` (weak ones fall under the clip policy's ``weak_below`` of 0.6); fades are sure."""
    if t.kind == "cut":
        conf = t.score / p.sure_cut
    elif t.kind == "dissolve":
        conf = t.score / p.strong_score
    else:
        conf = 1.0
    return dataclasses.replace(t, confidence=round(float(min(1.0, max(0.0, conf))), 4))


def detect_content(path: str, params: ContentParams | None = None) -> tuple[list[Transition], VideoTiming]:
    """Transitions in the video at `path` and its timing (see the module docstring)."""
    p = params or ContentParams()
    threads = p.threads if p.threads > 0 else min(2, os.cpu_count() or 1)
    scanner, feats = _coarse_pass(path, p, threads)
    coarse = len(feats.index)
    transitions = _detect(feats, scanner.fps, p)
    feats, transitions, extra = _refine_cuts(scanner, feats, transitions, p.max_gap)
    transitions, checked = _verify_cuts(scanner, feats, transitions, p)
    transitions = [with_confidence(t, p) for t in transitions]
    timing = VideoTiming(scanner.num_frames, scanner.fps, scanner.timestamps(), coarse + extra + checked)
    return transitions, timing
