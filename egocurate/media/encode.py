"""Clip media for shards and exports: resample, centre-crop, encode to MP4 bytes, decode windows.

Clips are rendered from their source (:func:`render_clip`, a :class:`~egocurate.media.source.ClipSource`)
through ``egocurate.media.decode`` (decord, seeking; upright whatever the backend). Shards and exports
carry clips as H.264 MP4 *bytes*, which decord cannot seek inside without a path, so windows of those
bytes are decoded here with PyAV, seeking to the keyframe before the window.
"""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from egocurate.media.crop import cover_size, crop_resize, short_side_size
from egocurate.media.source import ClipSource
from egocurate.media.tools import ffmpeg_exe

_SOURCE_DECODE_LOCK = threading.Lock()


def resample_indices(num_frames: int, src_fps: float, dst_fps: float | None) -> list[int]:
    """Offsets (into a clip of `num_frames` at `src_fps`) of the frames of the clip at `dst_fps`.

    Nearest-frame resampling over the clip's span: frame k of the output shows time k / dst_fps.
    `dst_fps` None (or equal to the source rate) keeps every frame.
    """
    if num_frames <= 0:
        return []
    if dst_fps is None or src_fps <= 0 or abs(dst_fps - src_fps) < 1e-6:
        return list(range(num_frames))
    count = int(np.floor((num_frames - 1) * dst_fps / src_fps + 1e-9)) + 1
    return [min(num_frames - 1, int(np.floor(k * src_fps / dst_fps + 0.5))) for k in range(count)]


LOW_FPS_POLICIES = ("native", "refuse")


class LowFrameRate(ValueError):
    """The source is slower than the target rate; duplicating frames to reach it would fake motion."""


def render_rate_plan(
    num_frames: int,
    src_fps: float,
    fps: float | None,
    lam_stride: int | None = None,
    low_fps: str = "native",
) -> tuple[list[int], float]:
    """(source frame offsets, output fps) of a clip: the one frame-rate rule of shards and exports.

    - `fps` None: the latent-action model's rate, every `lam_stride`-th source frame, so rendered
      pair i is exactly the LAM's pair i (native rate when the clip has no latent actions);
    - a source at or above `fps`: nearest-frame resampling down to `fps`;
    - a source below `fps` (by more than 1 %) is never frame-duplicated: `low_fps` "native" keeps its
      own rate, "refuse" raises :class:`LowFrameRate`.
    """
    if low_fps not in LOW_FPS_POLICIES:
        raise ValueError(f"low_fps {low_fps!r}: expected one of {', '.join(LOW_FPS_POLICIES)}")
    if fps is None:
        stride = max(1, int(lam_stride or 1))
        return list(range(0, num_frames, stride)), src_fps / stride
    if src_fps < float(fps) * 0.99:
        if low_fps == "refuse":
            raise LowFrameRate(
                f"source at {src_fps:g} fps is below the target {float(fps):g} fps (low_fps=refuse)"
            )
        return list(range(num_frames)), float(src_fps)
    if src_fps < float(fps):  # within 1 %: every frame, at the source's own rate
        return list(range(num_frames)), float(src_fps)
    return resample_indices(num_frames, src_fps, fps), float(fps)


def resampled_length(num_frames: int, src_fps: float, dst_fps: float | None) -> int:
    """How many frames a clip has after :func:`resample_indices`."""
    return len(resample_indices(num_frames, src_fps, dst_fps))


def render_clip(
    source: ClipSource,
    offsets: Sequence[int],
    width: int | None,
    height: int | None,
    chunk: int = 64,
) -> Iterator[np.ndarray]:
    """Upright frames of a clip at `offsets` (frames from ``source.start``), in chunks of `chunk`:
    cut to the clip's crop box, then centre-cropped and resized to `width` x `height` (None: as shown).

    The one way shards, exports and report thumbnails turn a clip into pixels. A clip without a crop
    box is decoded at the smallest size that covers the output; one with a box at full size.

    ``media.decode`` keeps a per-process cache of open decoders that threads would share, and a
    decord reader used by two threads at once can hang; source decodes are therefore serialised
    here, while encoding (an ffmpeg subprocess per clip) and cropping still run in parallel.
    """
    from egocurate.media.decode import read_frames

    size = None
    if source.crop is None and source.size is not None:
        size = cover_size(source.size[0], source.size[1], width, height)
    indices = [source.start + int(o) for o in offsets]
    for lo in range(0, len(indices), chunk):
        with _SOURCE_DECODE_LOCK:  # media.decode shares cached readers between threads
            frames = read_frames(source.uri, indices[lo : lo + chunk], size)
        if source.crop is not None:
            x, y, w, h = source.crop
            frames = frames[:, y : y + h, x : x + w]
        yield crop_resize(frames, width, height)


def clip_stills(source: ClipSource, count: int = 1, short_side: int = 224) -> np.ndarray:
    """`count` evenly spaced frames (N, H, W, 3) of a clip as shown, the short side at most
    `short_side`: what a captioner or the report's thumbnails look at (through :func:`render_clip`)."""
    from egocurate.media.decode import sample_indices

    if source.num_frames < 1:
        raise ValueError(f"clip of {source.uri} has an empty frame range [{source.start}, {source.end})")
    shown = source.shown_size
    width, height = (short_side_size(*shown, short_side) or shown) if shown else (None, None)
    offsets = sample_indices(0, source.num_frames, count)
    return np.concatenate(list(render_clip(source, offsets, width, height)))


def encode_mp4(
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float,
    crf: int = 23,
    preset: str = "veryfast",
    gop: int | None = None,
) -> bytes:
    """H.264 (yuv420p, faststart) MP4 bytes of RGB uint8 frames, via ffmpeg's libx264.

    `frames` is one (N, H, W, 3) array or an iterable of such chunks (streamed to ffmpeg, so a long
    clip never sits in memory whole). `gop` is the keyframe interval in frames; a short one makes
    window decodes cheap (default: 1 s). Odd sizes are padded by one pixel, as yuv420p needs it.
    """
    chunks = iter([frames] if isinstance(frames, np.ndarray) else frames)
    first = next(chunks, None)
    if first is None or first.ndim != 4 or first.shape[0] == 0:
        raise ValueError(f"expected (N, H, W, 3) frames, got {None if first is None else first.shape}")
    height, width = first.shape[1:3]
    gop = gop or max(1, int(round(fps)))
    fd, path = tempfile.mkstemp(suffix=".mp4", prefix="egocurate-clip-")
    os.close(fd)
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        f"{fps:.6g}",
        "-i",
        "-",
        "-vf",
        "pad=ceil(iw/2)*2:ceil(ih/2)*2",
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-crf",
        str(crf),
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-sc_threshold",
        "0",
        "-threads",
        "1",
        "-movflags",
        "+faststart",
        "-an",
        path,
    ]
    proc = None
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for chunk in itertools.chain([first], chunks):
                proc.stdin.write(np.ascontiguousarray(chunk, dtype=np.uint8).tobytes())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        finally:
            stderr = proc.stderr.read()
            proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg encode failed: {stderr.decode(errors='replace')[-400:]}")
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        os.unlink(path)


def probe_mp4(data: bytes) -> dict:
    """Frame count, fps, width and height of MP4 bytes (frames counted by demuxing, exact)."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        width, height = stream.codec_context.width, stream.codec_context.height
        count = sum(1 for packet in container.demux(stream) if packet.size)
    return {"num_frames": count, "fps": fps, "width": width, "height": height}


def _window_frames(container, stream, start: int) -> Iterator:
    """Decoded frames from frame `start` on, after seeking to the keyframe at or before it."""
    rate = stream.average_rate or stream.guessed_rate
    tb = stream.time_base
    origin = stream.start_time or 0
    if start > 0 and rate:
        container.seek(origin + int(start / (rate * tb)), stream=stream, backward=True, any_frame=False)
    for frame in container.decode(stream):
        if not (rate and frame.pts is not None) or round(float((frame.pts - origin) * tb * rate)) >= start:
            yield frame


def decode_mp4(data: bytes, start: int = 0, count: int | None = None) -> np.ndarray:
    """Frames [start, start + count) of MP4 bytes as uint8 RGB (N, H, W, 3); all frames by default.

    Seeks to the keyframe at or before `start` instead of decoding the clip from its first frame.
    Frame numbers come from presentation timestamps, so the window is exact for constant-rate clips.
    """
    import av

    out: list[np.ndarray] = []
    with av.open(io.BytesIO(data)) as container:
        for frame in _window_frames(container, container.streams.video[0], start):
            out.append(frame.to_ndarray(format="rgb24"))
            if count is not None and len(out) >= count:
                break
    if not out:
        raise ValueError(f"no frames decoded at start={start}")
    return np.stack(out)


def decode_mp4_into(data: bytes, start: int, out: np.ndarray) -> int:
    """Decode frames [start, start + len(out)) straight into `out` (N, H, W, 3) uint8; returns how many.

    A batch loader decodes each clip's window into its slot of one batch buffer, so the frames are
    copied once instead of three times (per-frame arrays, a per-clip stack, the batch stack).
    Raises ValueError when the frames are not of `out`'s size.
    """
    import av

    written = 0
    with av.open(io.BytesIO(data)) as container:
        for frame in _window_frames(container, container.streams.video[0], start):
            if (frame.height, frame.width) != out.shape[1:3]:
                raise ValueError(f"frame size {frame.height}x{frame.width} is not {out.shape[1:3]}")
            out[written] = frame.to_ndarray(format="rgb24")
            written += 1
            if written >= len(out):
                break
    return written


def mp4_size(data: bytes) -> tuple[int, int]:
    """(height, width) of the video stream of MP4 bytes, from its header."""
    import av

    with av.open(io.BytesIO(data)) as container:
        cc = container.streams.video[0].codec_context
        return int(cc.height), int(cc.width)


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int) -> Iterator[tuple[Any, Any]]:
    """(item, result or exception) in input order, with at most 2 x `workers` results in flight."""
    if workers <= 1:
        for item in items:
            try:
                yield item, fn(item)
            except Exception as exc:  # noqa: BLE001 - reported per clip, the write goes on
                yield item, exc
        return
    pending: deque = deque()
    with ThreadPoolExecutor(workers) as pool:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= 2 * workers:
                head, fut = pending.popleft()
                yield head, fut.exception() or fut.result()
        while pending:
            head, fut = pending.popleft()
            yield head, fut.exception() or fut.result()
