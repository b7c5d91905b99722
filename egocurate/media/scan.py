"""Sequential low-cost decode of one video for shot detectors (:class:`VideoScanner`).

Frames come out upright, as a player shows them, like every other decode (:mod:`egocurate.media.orient`).

The scanner drops non-reference frames inside the decoder (``skip_frame``), skips the loop filter and
scales with a cached swscale context, then decodes exact frames only inside requested ranges. Frame
indices are ranks of presentation timestamps, as in :mod:`egocurate.media.decode`, so both paths
agree on what "frame 120" is, VFR included.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from egocurate.media.decode import SKIP_FRAME, DecodeError, Size, SkipMode, open_source
from egocurate.media.orient import Orientation, display_orientation


def prefetch(items: Iterator[Any], depth: int = 64) -> Iterator[Any]:
    """Run `items` in a background thread, `depth` items ahead (decoding releases the GIL).

    Memory stays bounded by `depth`; an exception in the producer is raised in the consumer.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=produce, name="egocurate-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


class VideoScanner:
    """Low-cost sequential decode of one video for shot detectors.

    :meth:`scan` yields ``(pts, frame)`` for the frames the decoder keeps in `skip` mode, small RGB at
    `size`; after it, :attr:`frame_pts` holds the pts of *every* frame (from the demuxer) so
    :meth:`index_of` maps pts to frame indices. :meth:`decode_ranges` then decodes exact frames inside
    index ranges, skipping frames outside them, so a coarse pass can be refined where it matters.

    ``fast`` skips the deblocking loop filter: frames are slightly blockier, which a detector working
    on 64x48 thumbnails does not see, and decoding is ~25% cheaper.
    """

    def __init__(
        self,
        uri: str,
        size: Size = (64, 48),
        *,
        fast: bool = True,
        threads: int = 1,
        storage_options: dict | None = None,
    ):
        self.uri, self.size, self.fast, self.threads = uri, (int(size[0]), int(size[1])), fast, threads
        self.storage_options = storage_options
        self.frame_pts = np.zeros(0, np.int64)
        self.keyframes = np.zeros(0, np.int64)
        self.key_pts = np.zeros(0, np.int64)
        self.time_base = 0.0
        self.fps = 0.0
        self.has_b_frames = False
        self.decoded_frames = 0
        self._orientation: Orientation | None = None  # read from the file at the first frame

    # -- opening
    def _open(self, skip: SkipMode) -> tuple[Any, Any, Any]:
        import av

        source, handle = open_source(self.uri, self.storage_options)
        try:
            container = av.open(source, mode="r", metadata_errors="ignore")
        except Exception as exc:
            if handle is not None:
                handle.close()
            raise DecodeError(f"{self.uri}: cannot open video: {exc}") from exc
        if not container.streams.video:
            container.close()
            raise DecodeError(f"{self.uri}: no video stream")
        stream = container.streams.video[0]
        cc = stream.codec_context
        if self.threads != 1:
            stream.thread_type = "AUTO"
            cc.thread_count = int(self.threads)
        else:
            stream.thread_type = "NONE"
        if self.fast:
            cc.options = {"skip_loop_filter": "all"}
        cc.skip_frame = SKIP_FRAME[skip]
        self.time_base = float(stream.time_base or 0.0)
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        return container, stream, handle

    @property
    def num_frames(self) -> int:
        return len(self.frame_pts)

    def timestamps(self) -> np.ndarray:
        """Seconds of every frame from the first one (valid after a scan)."""
        if not len(self.frame_pts):
            return np.zeros(0)
        return (self.frame_pts - self.frame_pts[0]) * self.time_base

    def index_of(self, pts: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frame indices (pts ranks) of decoded frames' pts."""
        return np.searchsorted(self.frame_pts, np.asarray(pts, dtype=np.int64))

    def _thumb(self, reformatter: Any, frame: Any) -> np.ndarray:
        """The frame upright (as a player shows it; PyAV leaves the display matrix to us) at `size`."""
        if self._orientation is None:
            self._orientation = display_orientation(self.uri, self.storage_options).upright
        width, height = self._orientation.coded_size(self.size)
        small = reformatter.reformat(frame, width=width, height=height, format="rgb24", interpolation="AREA")
        return self._orientation.apply(small.to_ndarray()[None])[0]

    # -- passes
    def split_points(self, parts: int) -> list[int]:
        """Pts of up to ``parts - 1`` keyframes that cut the video into parts of similar duration.

        Each part can then be scanned on its own thread (:meth:`scan` with ``start_pts`` and
        ``stop_pts``): PyAV releases the GIL while decoding, so the parts decode in parallel.
        """
        if parts < 2:
            return []
        container, stream, handle = self._open("nonkey")
        try:
            first = stream.start_time or 0
            duration = stream.duration
            if not duration and container.duration and stream.time_base:
                duration = int(container.duration / 1_000_000 / stream.time_base)
            if not duration:
                return []
            points: list[int] = []
            for k in range(1, parts):
                container.seek(
                    int(first + duration * k / parts), stream=stream, backward=True, any_frame=False
                )
                packet = next((pk for pk in container.demux(stream) if pk.size and pk.pts is not None), None)
                if (
                    packet is not None
                    and packet.is_keyframe
                    and packet.pts > (points[-1] if points else first)
                ):
                    points.append(int(packet.pts))
            return points
        except Exception:  # unseekable input: scan it in one part
            return []
        finally:
            container.close()
            if handle is not None:
                handle.close()

    def scan(
        self, skip: SkipMode = "nonref", start_pts: int | None = None, stop_pts: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Decode the video in `skip` mode, yielding (pts, RGB thumbnail) in display order.

        ``nonref`` drops frames nothing references (exact for the rest; about half of the frames of
        a typical x264 stream with B-frames); ``none`` decodes everything. ``bidir`` drops every
        B-frame, which is faster but corrupts P-frames that reference B-frames: avoid it for detection.

        ``start_pts`` / ``stop_pts`` (keyframes from :meth:`split_points`) limit the scan to the frames
        in [start_pts, stop_pts); :attr:`frame_pts` then holds the pts of the packets this part read.
        """
        from av.video.reformatter import VideoReformatter

        container, stream, handle = self._open(skip)
        self.has_b_frames = bool(stream.codec_context.has_b_frames)
        reformatter = VideoReformatter()
        pts_all: list[int] = []
        key_pts: list[int] = []
        decoded = 0
        counter = 0
        low = -(2**62) if start_pts is None else int(start_pts)
        high = 2**62 if stop_pts is None else int(stop_pts)
        try:
            if start_pts is not None:
                container.seek(int(start_pts), stream=stream, backward=True, any_frame=False)
            for packet in container.demux(stream):
                last = False  # the next part starts at this keyframe: flush the decoder and stop
                if packet.size and not packet.is_discard:
                    p = int(packet.pts) if packet.pts is not None else counter
                    last = bool(packet.is_keyframe and p >= high)
                    if not last:
                        pts_all.append(p)
                        counter += 1
                        if packet.is_keyframe:
                            key_pts.append(p)
                try:
                    frames = stream.codec_context.decode(None) if last else packet.decode()
                except Exception:  # a corrupt packet: the rest of the stream may still decode
                    frames = []
                for frame in frames:
                    if frame.pts is None or not low <= frame.pts < high:
                        continue
                    decoded += 1
                    yield int(frame.pts), self._thumb(reformatter, frame)
                if last:
                    break
        finally:
            container.close()
            if handle is not None:
                handle.close()
            self.frame_pts = np.unique(np.asarray(pts_all, dtype=np.int64))
            self.key_pts = np.asarray(sorted(set(key_pts)), dtype=np.int64)
            self.keyframes = np.searchsorted(self.frame_pts, self.key_pts)
            self.decoded_frames = decoded

    @classmethod
    def merged(cls, parts: Sequence[VideoScanner]) -> VideoScanner:
        """One scanner over the whole video from scanners of its parts (after their scans)."""
        whole = copy.copy(parts[0])
        whole.frame_pts = np.unique(np.concatenate([part.frame_pts for part in parts]))
        whole.key_pts = np.unique(np.concatenate([part.key_pts for part in parts]))
        whole.keyframes = np.searchsorted(whole.frame_pts, whole.key_pts)
        whole.decoded_frames = sum(part.decoded_frames for part in parts)
        whole.has_b_frames = any(part.has_b_frames for part in parts)
        return whole

    def decode_ranges(
        self, ranges: Sequence[tuple[int, int]], skip_outside: SkipMode = "nonref"
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(index, thumbnail) of every frame inside the index ranges [a, b), after a :meth:`scan`.

        The decoder seeks to the keyframe before each range (or keeps going when that is closer),
        drops frames in `skip_outside` mode until it nears the range, and decodes everything inside.
        """
        from av.video.reformatter import VideoReformatter

        if not len(self.frame_pts):
            raise RuntimeError("decode_ranges needs frame pts: run scan() first")
        merged: list[list[int]] = []
        for a, b in sorted((max(0, int(a)), min(self.num_frames, int(b))) for a, b in ranges):
            if b <= a:
                continue
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        if not merged:
            return
        container, stream, handle = self._open(skip_outside)
        cc = stream.codec_context
        reformatter = VideoReformatter()
        reorder = 16  # decode order trails display order by at most this many frames
        pts = self.frame_pts
        try:
            position = -1  # last frame index the decoder has output
            demuxer: Iterator | None = None
            for a, b in merged:
                key = (
                    int(self.keyframes[np.searchsorted(self.keyframes, a, side="right") - 1])
                    if len(self.keyframes)
                    else 0
                )
                key = max(key, 0)
                if demuxer is None or position >= a or key > position:
                    container.seek(int(pts[key]), stream=stream, backward=True, any_frame=False)
                    demuxer = container.demux(stream)
                    position = -1
                lo_pts = pts[max(a - reorder, 0)]
                hi_pts = pts[min(b - 1 + reorder, self.num_frames - 1)]
                done = False
                for packet in demuxer:
                    if packet.pts is not None and packet.size:
                        inside = lo_pts <= packet.pts <= hi_pts
                        cc.skip_frame = "DEFAULT" if inside else SKIP_FRAME[skip_outside]
                    try:
                        frames = packet.decode()
                    except Exception:
                        continue
                    for frame in frames:
                        if frame.pts is None:
                            continue
                        index = int(np.searchsorted(pts, frame.pts))
                        position = max(position, index)
                        if a <= index < b:
                            yield index, self._thumb(reformatter, frame)
                        if index >= b - 1:
                            done = True
                    if done:
                        break
        finally:
            container.close()
            if handle is not None:
                handle.close()
