"""The ``cascade`` shot detector: a cheap CPU pass proposes, TransNetV2 confirms only around proposals.

1. **Propose** (CPU, the content detector's coarse pass on 64x48 frames, non-reference frames
   dropped by the decoder): every place where anything might be a transition, at high recall:
   consecutive changes that stand above their surroundings (cuts, whip pans, flashes), long-range
   contrast peaks at several lengths (dissolves, wipes, fades), near-black and near-white frames
   (fades through black or white), and whatever the content detector itself reports.
2. **Confirm** (TransNetV2, CPU or GPU): TransNetV2's reference inference predicts frames
   [50j, 50j + 50) from the 100-frame window j (frames 50j - 25 .. 50j + 74, the video's first and
   last frames repeated past its ends). Only the windows whose predicted frames touch a proposal are
   decoded (exact frames at 48x27, by seeking) and run; a run of frames above the threshold that
   reaches the edge of the evaluated frames pulls in the next window too, until no run is cut short.
   Every transition found is therefore exactly the one a full TransNetV2 pass reports, and the
   cascade reports all of them whenever the proposals cover them.

Far fewer frames go through the network on footage that is mostly long continuous takes, which is
what egocentric corpora are.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import numpy as np

from egocurate.ingest.shot_content import (
    ContentParams,
    _coarse_pass,
    _detect,
    _dist,
    _Features,
    _local_level,
    _nearest,
)
from egocurate.ingest.shot_transnet import (
    INPUT_SIZE,
    MARGIN,
    STEP,
    WINDOW,
    default_batch_windows,
    load_transnet,
    to_transitions,
)
from egocurate.ingest.shot_types import Transition, VideoTiming


@dataclass(frozen=True)
class CascadeParams:
    """Knobs of the proposal pass, chosen on the tuning part of benchmarks/shot_real_data only.

    There, the content detector's own transitions plus isolated consecutive-change peaks and
    near-black / near-white frames covered every TransNetV2 transition on the splices while sending
    38% of the windows to the network. Long-range contrast proposals (``contrast_scales_s``) are off
    by default: they added nothing on the splices and covered only TransNetV2's false boundaries on
    a continuous Aria take (head turns), tripling the windows run on takes.
    """

    step_floor: float = 0.10  # consecutive change that may be a cut ...
    step_ratio: float = 2.5  # ... when it stands this far above the median change around it
    contrast_scales_s: tuple[float, ...] = ()  # lengths of gradual transitions looked for (off)
    contrast_floor: float = 0.3  # long-range contrast that may be a gradual transition ...
    contrast_ratio: float = 1.5  # ... when it beats this many times the change within the shots beside
    dark_luma: float = 24.0  # frames darker (or brighter than 255 - bright_margin) may be a fade
    bright_margin: float = 24.0
    pad: int = 3  # frames around each proposal that must be confirmed


def propose(
    f: _Features, fps: float, p: CascadeParams, extra: list[Transition] = ()
) -> list[tuple[int, int]]:
    """Frame ranges [a, b] that may hold a transition (high recall, low precision)."""
    idx = f.index
    m = len(idx)
    if m < 3:
        return [(0, int(idx[-1]) if m else 0)]
    out: list[tuple[int, int]] = []
    level = _local_level(f.step, radius=8, exclude=1)
    hit = (f.step >= p.step_floor) & (f.step >= p.step_ratio * level + 0.02)
    hit[0] = False
    for s in np.nonzero(hit)[0]:
        out.append((int(idx[s - 1]), int(idx[s])))
    for length_s in p.contrast_scales_s:
        half = length_s * fps / 2 + 1
        reach = max(4.0, length_s * fps / 3)
        a, b = _nearest(idx, idx - half), _nearest(idx, idx + half)
        a2, b2 = _nearest(idx, idx - half - reach), _nearest(idx, idx + half + reach)
        contrast = _dist(f, a, b)
        stability = np.maximum(_dist(f, a2, a), _dist(f, b, b2))
        ok = (contrast >= p.contrast_floor) & (contrast >= p.contrast_ratio * stability)
        # local maxima of contrast only: a plateau of overlapping candidates is one proposal
        left = np.concatenate([[-1.0], contrast[:-1]])
        right = np.concatenate([contrast[1:], [-1.0]])
        peak = ok & (contrast >= left) & (contrast >= right)
        for s in np.nonzero(peak)[0]:
            out.append((int(idx[a[s]]), int(idx[b[s]])))
    extreme = (f.luma < p.dark_luma) | (f.luma > 255.0 - p.bright_margin)
    for s in np.nonzero(extreme)[0]:
        out.append((int(idx[max(s - 1, 0)]), int(idx[min(s + 1, m - 1)])))
    for t in extra:
        out.append((t.start_frame - 1, max(t.start_frame, t.end_frame)))
    return _union([(a - p.pad, b + p.pad) for a, b in out])


def _union(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def windows_for(ranges: list[tuple[int, int]], num_frames: int) -> set[int]:
    """TransNetV2 windows whose predicted frames [50j, 50j + 50) touch any of `ranges`."""
    last = (num_frames - 1) // STEP if num_frames else -1
    out: set[int] = set()
    for a, b in ranges:
        lo, hi = max(0, a) // STEP, min(num_frames - 1, b) // STEP
        out.update(range(max(lo, 0), min(hi, last) + 1))
    return out


def window_frames(j: int, num_frames: int) -> np.ndarray:
    """Frame indices of window j as the reference inference builds it (edges repeated)."""
    return np.clip(np.arange(j * STEP - MARGIN, j * STEP - MARGIN + WINDOW), 0, num_frames - 1)


def _run_windows(
    scanner, windows: list[int], num_frames: int, model, batch_windows: int
) -> dict[int, np.ndarray]:
    """Per window j, TransNetV2's probabilities for its predicted frames (exact frames, by seeking)."""
    import torch

    needed = [
        (int(window_frames(j, num_frames)[0]), int(window_frames(j, num_frames)[-1]) + 1) for j in windows
    ]
    frames = dict(scanner.decode_ranges(needed, "nonref"))
    missing = [i for a, b in needed for i in range(a, b) if i not in frames]
    if missing:  # an index the seek could not produce: fall back to the nearest decoded frame
        have = np.array(sorted(frames))
        for i in set(missing):
            frames[i] = frames[int(have[np.abs(have - i).argmin()])]
    dev = next(model.parameters()).device
    out: dict[int, np.ndarray] = {}
    for k in range(0, len(windows), batch_windows):
        chunk = windows[k : k + batch_windows]
        x = np.stack([np.stack([frames[int(i)] for i in window_frames(j, num_frames)]) for j in chunk])
        with torch.inference_mode():
            single, _ = model(torch.from_numpy(x).to(dev))
        probs = torch.sigmoid(single[:, MARGIN : MARGIN + STEP, 0]).float().cpu().numpy()
        for j, pr in zip(chunk, probs, strict=True):
            out[j] = pr
    return out


def detect_cascade(
    path: str,
    device: str = "auto",
    threshold: float = 0.5,
    cut_max_frames: int = 2,
    batch_windows: int | None = None,
    threads: int = 0,
    params: CascadeParams | None = None,
    storage_options: dict | None = None,
) -> tuple[list[Transition], VideoTiming]:
    """Transitions a full TransNetV2 pass would report, from only the windows around proposals."""
    p = params or CascadeParams()
    threads = threads if threads > 0 else min(2, os.cpu_count() or 1)
    content = ContentParams(threads=threads, storage_options=storage_options)
    scanner, feats = _coarse_pass(path, content, threads)
    n = scanner.num_frames
    fps = scanner.fps or 30.0
    coarse = len(feats.index)
    ranges = propose(feats, fps, p, _detect(feats, fps, content)) if n else []
    exact = copy.copy(scanner)
    exact.size, exact.fast = INPUT_SIZE, False
    model = load_transnet(device)
    batch_windows = batch_windows or default_batch_windows(str(next(model.parameters()).device))
    probs = np.zeros(n, np.float32)
    evaluated = np.zeros(n, bool)
    todo = sorted(windows_for(ranges, n))
    done: set[int] = set()
    while todo:
        for j, pr in _run_windows(exact, todo, n, model, batch_windows).items():
            lo = j * STEP
            hi = min(lo + STEP, n)
            probs[lo:hi] = pr[: hi - lo]
            evaluated[lo:hi] = True
        done.update(todo)
        # a run above threshold that reaches unevaluated frames may go on there: evaluate them too
        above = probs > threshold
        grow = set()
        for j in done:
            lo, hi = j * STEP, min(j * STEP + STEP, n)
            if above[lo] and lo > 0 and not evaluated[lo - 1]:
                grow.add((lo - 1) // STEP)
            if above[hi - 1] and hi < n and not evaluated[hi]:
                grow.add(hi // STEP)
        todo = sorted(grow - done)
    timing = VideoTiming(n, scanner.fps, scanner.timestamps(), coarse + int(evaluated.sum()))
    return to_transitions(probs, threshold, cut_max_frames), timing
