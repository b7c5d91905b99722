"""Frame access for every consumer: decord with seeking and reduced-resolution decode, PyAV fallback.

This is the one place that decodes video (DESIGN.md, performance stance):

- :func:`read_frames` / :func:`read_clip` / :func:`iter_frames`: random access through decord (seeking,
  output resized inside the decoder), falling back to PyAV for what decord cannot open (object-store
  URLs, codecs its bundled FFmpeg lacks, files it trips over). :func:`iter_frames` bounds memory by
  yielding fixed-size batches, whatever the clip length.
- :func:`indices_at_fps`: the frames of a range resampled to a target frame rate (VFR-aware).
- :func:`decode_shared` / :func:`decode_plans` / :func:`read_plan`: one decode of a clip feeds several
  consumers, each at its own size and rate, and each gets exactly the frames it gets decoding alone
  (every frame is scaled by swscale straight from the decoded picture to each requested size).
- The sequential low-cost pass for shot detectors lives in :mod:`egocurate.media.scan`.

Sizes are ``(width, height)`` of the output. Frames are returned upright, as a player shows them,
whichever backend decodes them, and ``size`` refers to the upright frame: each reader reads the
file's display matrix once (:mod:`egocurate.media.orient`) and applies what its decoder left undone
(PyAV: all of it; decord: a mirror, as it applies only the rotation angle). Callers never rotate.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from egocurate.media.files import file_stamp, is_remote, local_path, open_source
from egocurate.media.orient import Orientation, display_orientation

Size = tuple[int, int]
Backend = Literal["auto", "decord", "pyav"]
SkipMode = Literal["none", "nonref", "bidir", "nonkey"]

MAX_BATCH_FRAMES = 64  # frames per decoded batch in iter_frames (memory bound, not a quality knob)
_READER_CACHE_SIZE = 2  # open readers kept per process, so clips of one video do not reopen it

SKIP_FRAME = {"none": "DEFAULT", "nonref": "NONREF", "bidir": "BIDIR", "nonkey": "NONKEY"}
# swscale filter of planned decodes (decode_shared): the closest to decord's own scaler, so scores
# keep the scale they were tuned at (mean difference about 0.01 level on a 1080p source).
PLANNED_INTERPOLATION = "BILINEAR"


class DecodeError(RuntimeError):
    """A video (or the requested frames of it) could not be decoded by any backend."""


# ------------------------------------------------------------------------------------------ helpers
def resize_frames(frames: np.ndarray, size: Size) -> np.ndarray:
    """Resize (N, H, W, C) frames to `size` = (width, height) with area averaging."""
    import cv2

    w, h = int(size[0]), int(size[1])
    if frames.shape[2] == w and frames.shape[1] == h:
        return frames
    out = np.empty((frames.shape[0], h, w, frames.shape[3]), dtype=frames.dtype)
    for i, frame in enumerate(frames):
        out[i] = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA).reshape(h, w, -1)
    return out


# ------------------------------------------------------------------------------------------ indices
def sample_indices(start_frame: int, end_frame: int, count: int) -> list[int]:
    """`count` evenly spaced frame indices in [start_frame, end_frame)."""
    if end_frame <= start_frame or count <= 0:
        return []
    span = end_frame - start_frame
    return [start_frame + int((k + 0.5) * span / count) for k in range(count)]


def indices_at_fps(
    start_frame: int,
    end_frame: int,
    src_fps: float,
    target_fps: float | None,
    timestamps: Sequence[float] | np.ndarray | None = None,
) -> list[int]:
    """Frames of [start_frame, end_frame) resampled to `target_fps` (never above the source rate).

    With per-frame `timestamps` (seconds, one per frame of the video) the choice follows real time,
    which keeps variable-frame-rate sources in sync; otherwise frames are assumed evenly spaced.
    """
    if end_frame <= start_frame:
        return []
    if not target_fps or target_fps <= 0 or (src_fps and target_fps >= src_fps and timestamps is None):
        return list(range(start_frame, end_frame))
    if timestamps is not None:
        ts = np.asarray(timestamps, dtype=np.float64)[start_frame:end_frame]
        t0 = ts[0]
        count = int(math.floor((ts[-1] - t0) * target_fps + 1e-6)) + 1
        wanted = t0 + np.arange(count) / target_fps
        pos = np.searchsorted(ts, wanted + 1e-6, side="right") - 1  # last frame shown at that instant
        picked = sorted(set(int(start_frame + p) for p in np.clip(pos, 0, len(ts) - 1)))
        return picked
    step = src_fps / target_fps
    count = int(math.floor((end_frame - start_frame) / step + 1e-6))
    return [start_frame + int(math.floor(k * step + 1e-6)) for k in range(max(count, 1))]


# ------------------------------------------------------------------------------------------ readers
class _DecordReader:
    """decord VideoReader: seeks, resizes inside the decoder, frame index = pts rank.

    decord turns pictures by the display matrix's rotation angle itself (its `width`/`height` are
    then the turned picture's); `finish` is what is left for a mirrored matrix.
    """

    backend = "decord"

    def __init__(self, path: str, size: Size | None, threads: int = 1, finish: Orientation | None = None):
        import decord

        self._finish = finish or Orientation()
        size = self._finish.coded_size(size)
        kwargs: dict[str, Any] = {"ctx": decord.cpu(0), "num_threads": int(threads)}
        if size is not None:
            kwargs["width"], kwargs["height"] = int(size[0]), int(size[1])
        self._vr = decord.VideoReader(path, **kwargs)
        self.num_frames = len(self._vr)
        self.fps = float(self._vr.get_avg_fps() or 0.0)

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        return self._finish.apply(self._vr.get_batch(list(indices)).asnumpy())

    def timestamps(self) -> np.ndarray:
        ts = np.asarray(self._vr.get_frame_timestamp(list(range(self.num_frames))), dtype=np.float64)[:, 0]
        return ts - ts[0] if len(ts) else ts

    def close(self) -> None:
        self._vr = None


def _packet_index(container: Any, stream: Any) -> tuple[np.ndarray, np.ndarray]:
    """(sorted pts of every frame, sorted frame indices of keyframes), from demuxing only."""
    pts: list[int] = []
    key_pts: list[int] = []
    for packet in container.demux(stream):
        if packet.size == 0 or packet.pts is None or packet.is_discard:
            continue
        pts.append(int(packet.pts))
        if packet.is_keyframe:
            key_pts.append(int(packet.pts))
    frame_pts = np.unique(np.asarray(pts, dtype=np.int64))
    keys = np.searchsorted(frame_pts, np.asarray(sorted(set(key_pts)), dtype=np.int64))
    return frame_pts, keys.astype(np.int64)


def frame_times(uri: str, storage_options: dict | None = None) -> tuple[np.ndarray, float]:
    """(seconds of every frame from the first, average fps) from the demuxer alone, no decoding."""
    import av

    source, handle = open_source(uri, storage_options)
    try:
        with av.open(source, metadata_errors="ignore") as container:
            if not container.streams.video:
                raise DecodeError(f"{uri}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            pts, _ = _packet_index(container, stream)
            tb = float(stream.time_base or 0.0)
    finally:
        if handle is not None:
            handle.close()
    return ((pts - pts[0]) * tb if len(pts) else np.zeros(0)), (float(rate) if rate else 0.0)


class _PyAVReader:
    """PyAV reader with frame-accurate seeking by pts rank (the fallback for what decord cannot open).

    PyAV returns coded pictures: each is scaled to the coded size of the upright `size` and then
    turned and mirrored upright by `upright` (the file's display matrix).
    """

    backend = "pyav"

    def __init__(
        self,
        uri: str,
        size: Size | None,
        storage_options: dict | None = None,
        threads: int = 1,
        upright: Orientation | None = None,
    ):
        import av
        from av.video.reformatter import VideoReformatter

        self._upright = upright or Orientation()
        self._uri, self._storage_options = uri, storage_options
        self._size = self._upright.coded_size(size)
        source, self._handle = open_source(uri, storage_options)
        try:
            self._container = av.open(source, mode="r", metadata_errors="ignore")
        except Exception:
            if self._handle is not None:
                self._handle.close()
            raise
        if not self._container.streams.video:
            self.close()
            raise DecodeError(f"{uri}: no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO" if threads != 1 else "NONE"
        if threads > 1:
            self._stream.codec_context.thread_count = int(threads)
        self._pts, self._keys = _packet_index(self._container, self._stream)
        self._rank = {int(p): i for i, p in enumerate(self._pts)}
        self.num_frames = len(self._pts)
        self.time_base = float(self._stream.time_base or 0.0)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self._reformatter = VideoReformatter()
        self._scalers: dict[Size | None, Any] = {}  # one swscale context per planned output size
        self._gen: Iterator | None = None
        self._pos = -1

    def timestamps(self) -> np.ndarray:
        return (self._pts - self._pts[0]) * self.time_base if self.num_frames else np.zeros(0)

    def _convert(self, frame: Any) -> np.ndarray:
        w, h = self._size if self._size is not None else (None, None)
        return self._reformatter.reformat(
            frame, width=w, height=h, format="rgb24", interpolation="AREA"
        ).to_ndarray()

    def _scaled(self, frame: Any, size: Size | None) -> np.ndarray:
        """`frame` as RGB at `size` (None: native) with the planned-decode filter, one thread: the
        same bytes whichever other sizes the frame is also scaled to, and in whatever order."""
        from av.video.reformatter import VideoReformatter

        scaler = self._scalers.get(size)
        if scaler is None:
            scaler = self._scalers[size] = VideoReformatter()
        w, h = size if size is not None else (None, None)
        return scaler.reformat(
            frame, width=w, height=h, format="rgb24", interpolation=PLANNED_INTERPOLATION, threads=1
        ).to_ndarray()

    def _seek(self, index: int) -> None:
        key = int(self._keys[np.searchsorted(self._keys, index, side="right") - 1]) if len(self._keys) else 0
        key = max(key, 0)
        self._container.seek(int(self._pts[key]), stream=self._stream, backward=True, any_frame=False)
        self._gen = self._frames()
        self._pos = -1

    def _rewind(self) -> None:
        self._container.seek(int(self._pts[0]), stream=self._stream, backward=True, any_frame=False)
        self._gen = self._frames()
        self._pos = -1

    def _frames(self) -> Iterator[tuple[int, Any]]:
        for frame in self._container.decode(self._stream):
            index = self._rank.get(int(frame.pts)) if frame.pts is not None else None
            if index is not None:
                yield index, frame

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        got = self._collect(indices, lambda _, frame: self._convert(frame))
        if not len(indices):
            return np.zeros((0, 0, 0, 3), np.uint8)
        return self._upright.apply(np.stack([got[int(i)] for i in indices]))

    def get_sized(self, wanted: Mapping[Size | None, Sequence[int]]) -> dict[Size | None, np.ndarray]:
        """For each upright output size, the upright frames at its indices: one decode of the union
        of the indices, each decoded picture scaled once to every size that asks for it (see
        :meth:`_scaled`)."""
        coded = {size: self._upright.coded_size(size) for size in wanted}
        sizes_at: dict[int, list[Size | None]] = {}
        for size, indices in wanted.items():
            for index in indices:
                at = sizes_at.setdefault(int(index), [])
                if coded[size] not in at:
                    at.append(coded[size])
        got = self._collect(
            list(sizes_at), lambda index, frame: {s: self._scaled(frame, s) for s in sizes_at[index]}
        )
        return {
            size: self._upright.apply(np.stack([got[int(i)][coded[size]] for i in indices]))
            for size, indices in wanted.items()
        }

    def _collect(self, indices: Sequence[int], convert: Any) -> dict[int, Any]:
        """``convert(index, frame)`` of each frame at `indices`, decoded forward from a keyframe."""
        wanted = sorted(set(int(i) for i in indices))
        got: dict[int, Any] = {}
        for target in wanted:
            if target in got:
                continue
            key_before = (
                self._keys[np.searchsorted(self._keys, target, side="right") - 1] if len(self._keys) else 0
            )
            if self._gen is None or self._pos >= target or key_before > self._pos:
                self._seek(target)
            found = self._advance(target, wanted, got, convert)
            if not found:  # the seek landed past the target (a poor index): decode from the start
                self._rewind()
                if not self._advance(target, wanted, got, convert):
                    raise DecodeError(f"{self._uri}: frame {target} could not be decoded")
        return got

    def _advance(self, target: int, wanted: list[int], got: dict[int, Any], convert: Any) -> bool:
        assert self._gen is not None
        wanted_set = set(wanted)
        start = self._pos
        for index, frame in self._gen:
            if start < 0 and index > target:  # first frame after a seek is already past the target
                return False
            self._pos = index
            if index in wanted_set and index not in got:
                got[index] = convert(index, frame)
            if index >= target:
                return target in got
        return False

    def close(self) -> None:
        try:
            self._container.close()
        finally:
            if self._handle is not None:
                self._handle.close()


_READERS: OrderedDict[tuple, Any] = OrderedDict()
_READERS_LOCK = threading.RLock()  # cached readers are not thread-safe: one decode at a time per process


def _cache_key(uri: str, size: Size | None, backend: str) -> tuple:
    return (uri, tuple(size) if size else None, backend, file_stamp(uri))


def open_reader(
    uri: str,
    size: Size | None = None,
    backend: Backend = "auto",
    storage_options: dict | None = None,
    threads: int = 1,
) -> Any:
    """An object with ``num_frames``, ``fps``, ``get_batch(indices)``, ``timestamps()`` and ``backend``.

    ``auto`` tries decord and falls back to PyAV; object-store URLs go straight to PyAV (fsspec).
    `size` is the (width, height) of the upright output; every backend returns upright frames.
    """
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"backend must be one of auto, decord, pyav; got {backend!r}")
    shown = display_orientation(uri, storage_options)
    errors = []
    if backend in ("auto", "decord") and not is_remote(uri):
        try:
            return _DecordReader(local_path(uri), size, threads, shown.after_decord)
        except Exception as exc:  # decord raises its own error types; any failure means "try PyAV"
            errors.append(f"decord: {type(exc).__name__}: {str(exc)[:200]}")
            if backend == "decord":
                raise DecodeError(f"{uri}: {errors[-1]}") from exc
    try:
        return _PyAVReader(uri, size, storage_options, threads, shown.upright)
    except DecodeError:
        raise
    except Exception as exc:
        errors.append(f"pyav: {type(exc).__name__}: {str(exc)[:200]}")
        raise DecodeError(f"{uri}: cannot open video ({'; '.join(errors)})") from exc


def _cached_reader(uri: str, size: Size | None, backend: Backend, storage_options: dict | None) -> Any:
    key = _cache_key(uri, size, backend)
    reader = _READERS.pop(key, None)
    if reader is None:
        reader = open_reader(uri, size, backend, storage_options)
    _READERS[key] = reader
    while len(_READERS) > _READER_CACHE_SIZE:
        _, old = _READERS.popitem(last=False)
        old.close()
    return reader


def clear_reader_cache() -> None:
    """Close the readers kept open between calls (tests and long-lived workers may want this)."""
    with _READERS_LOCK:
        while _READERS:
            _, reader = _READERS.popitem(last=False)
            reader.close()


class _ResizingReader:
    """A native-size reader whose frames are resized here: for sizes decord's scaler gets wrong."""

    def __init__(self, inner: Any, size: Size):
        self._inner, self._size = inner, size
        self.backend, self.num_frames, self.fps = inner.backend, inner.num_frames, inner.fps

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        return resize_frames(self._inner.get_batch(indices), self._size)

    def timestamps(self) -> np.ndarray:
        return self._inner.timestamps()

    def close(self) -> None:
        self._inner.close()


def _get(
    uri: str,
    indices: list[int],
    dsize: Size | None,
    backend: Backend,
    storage_options: dict | None,
    *,
    planned: Mapping[Size | None, Sequence[int]] | None = None,
) -> Any:
    """Decode `indices` (clamped to the video) with the cached reader: the one call every decode
    goes through (tests count it, ``benchmarks/pipeline.py`` times it).

    When decord fails on a file it opened (some output sizes trip its scaler; some streams its
    decoder), the frames are decoded at native size and resized here, then, failing that, by PyAV.
    The reader that worked is cached under the same key, so the next call goes straight to it.

    With `planned` (decoder output size -> indices; `indices`, `dsize` and `backend` unused), the
    planned frames of :func:`decode_shared`: ``{size: frames}`` from :func:`_get_sized`.
    """
    if planned is not None:
        return _get_sized(uri, planned, storage_options)
    key = _cache_key(uri, dsize, backend)
    reader = _cached_reader(uri, dsize, backend, storage_options)
    last = reader.num_frames - 1
    if last < 0:
        raise DecodeError(f"{uri}: the video has no frames")
    idx = [min(max(int(i), 0), last) for i in indices]
    try:
        return reader.get_batch(idx)
    except Exception as exc:
        if reader.backend != "decord":
            raise DecodeError(f"{uri}: {type(exc).__name__}: {exc}") from exc
        first_error = exc
    _READERS.pop(key, None)
    candidates: list[tuple[str, Any]] = []
    if dsize is not None:
        candidates.append(
            ("decord", lambda: _ResizingReader(open_reader(uri, None, "decord", storage_options), dsize))
        )
    if backend != "decord":
        candidates.append(("pyav", lambda: open_reader(uri, dsize, "pyav", storage_options)))
    for _, make in candidates:
        try:
            fallback = make()
            frames = fallback.get_batch([min(max(int(i), 0), fallback.num_frames - 1) for i in indices])
        except Exception:
            continue
        _READERS[key] = fallback
        return frames
    raise DecodeError(f"{uri}: {type(first_error).__name__}: {first_error}") from first_error


def source_fps(uri: str, backend: Backend = "auto", storage_options: dict | None = None) -> float:
    """Average frame rate of the video at `uri` (from the cached reader)."""
    with _READERS_LOCK:
        return float(_cached_reader(uri, None, backend, storage_options).fps)


def read_frames(
    uri: str,
    indices: Sequence[int],
    size: Size | None = None,
    *,
    backend: Backend = "auto",
    storage_options: dict | None = None,
) -> np.ndarray:
    """Upright frames at `indices` as uint8 RGB (N, H, W, 3); `size` is (width, height) of the output.

    Indices outside the video are clamped to its first/last frame.
    """
    if len(indices) == 0:
        w, h = size if size is not None else (0, 0)
        return np.zeros((0, h, w, 3), np.uint8)
    with _READERS_LOCK:
        return _get(uri, list(indices), size, backend, storage_options)


def iter_frames(
    uri: str,
    indices: Sequence[int],
    size: Size | None = None,
    *,
    batch_frames: int = MAX_BATCH_FRAMES,
    backend: Backend = "auto",
    storage_options: dict | None = None,
) -> Iterator[tuple[list[int], np.ndarray]]:
    """(indices, frames) batches of at most `batch_frames` frames: memory stays bounded by the batch."""
    if batch_frames < 1:
        raise ValueError(f"batch_frames must be >= 1, got {batch_frames}")
    indices = list(indices)
    for lo in range(0, len(indices), batch_frames):
        chunk = indices[lo : lo + batch_frames]
        yield (
            chunk,
            read_frames(uri, chunk, size, backend=backend, storage_options=storage_options),
        )


def read_clip(
    uri: str,
    start_frame: int,
    end_frame: int,
    num_frames: int | None = None,
    size: Size | None = None,
    *,
    fps: float | None = None,
    src_fps: float | None = None,
    backend: Backend = "auto",
    storage_options: dict | None = None,
) -> np.ndarray:
    """Frames of [start_frame, end_frame): all of them, `num_frames` evenly spaced, or at `fps`.

    `fps` needs the source rate `src_fps` (read from the file when not given).
    """
    if num_frames is not None:
        indices = sample_indices(start_frame, end_frame, num_frames)
    elif fps:
        rate = src_fps or source_fps(uri, backend, storage_options)
        indices = indices_at_fps(start_frame, end_frame, rate, fps)
    else:
        indices = list(range(start_frame, end_frame))
    return read_frames(uri, indices, size, backend=backend, storage_options=storage_options)


# ------------------------------------------------------------------------------------ shared decode
@dataclass(frozen=True)
class FrameRequest:
    """What one consumer of a clip needs, at `size` (None: native): explicit source frame `indices`,
    or `num_frames` evenly spaced, or every frame at `fps`."""

    num_frames: int | None = None
    fps: float | None = None
    size: Size | None = None
    indices: tuple[int, ...] | None = None

    def frames(self, start_frame: int, end_frame: int, src_fps: float) -> list[int]:
        if self.indices is not None:
            return list(self.indices)
        if self.num_frames is not None:
            return sample_indices(start_frame, end_frame, self.num_frames)
        return indices_at_fps(start_frame, end_frame, src_fps, self.fps)


@dataclass(frozen=True)
class FramePlan:
    """The frames one consumer needs from one row: the file and the request (sizes upright)."""

    uri: str
    request: FrameRequest


FRAMES_COLUMN = "_frames"  # pre-decoded frames of a row: uint8 bytes of (N, H, W, 3)
FRAMES_SHAPE_COLUMN = "_frames_shape"


def frames_columns(frames: Sequence[np.ndarray | None]) -> tuple[Any, Any]:
    """Arrow columns (bytes, shape) holding one frame array per row; None where a row has none."""
    import pyarrow as pa

    data = pa.array([None if f is None else f.tobytes() for f in frames], pa.large_binary())
    shapes = pa.array([None if f is None else list(f.shape) for f in frames], pa.list_(pa.int32()))
    return data, shapes


def frames_of(row: Mapping[str, Any]) -> np.ndarray | None:
    """The pre-decoded frames a row carries (see :func:`frames_columns`), or None."""
    data, shape = row.get(FRAMES_COLUMN), row.get(FRAMES_SHAPE_COLUMN)
    if data is None or shape is None:
        return None
    return np.frombuffer(data, np.uint8).reshape([int(s) for s in shape])


def attach_frames(batch: Any, plan_of: Any) -> Any:
    """`batch` (an Arrow table) with each row's frames decoded per ``plan_of(row)`` in
    :data:`FRAMES_COLUMN`; a row without a plan, or whose decode fails, gets None (the stage then
    decodes, or reports, it itself). The CPU step a GPU stage's engine runs ahead of its actors."""
    frames = []
    for row in batch.to_pylist():
        plan = None
        try:
            plan = plan_of(row)
            frames.append(decode_plans({"frames": plan}).get("frames") if plan is not None else None)
        except Exception:  # noqa: BLE001 - the stage reports the row when it processes it
            frames.append(None)
    data, shapes = frames_columns(frames)
    return batch.append_column(FRAMES_COLUMN, data).append_column(FRAMES_SHAPE_COLUMN, shapes)


def decode_plans(plans: Mapping[str, FramePlan | None], start_frame: int = 0, end_frame: int = 0,
                 storage_options: dict | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Frames for each consumer's plan, decoding each file once for all the plans that read it.

    Each consumer's frames are bit-identical to :func:`read_plan` of its plan alone (see
    :func:`decode_shared`), so a stage writes the same values fused (``jobs.fused``) or alone.
    """
    by_file: dict[str, dict[str, FrameRequest]] = {}
    for name, plan in plans.items():
        if plan is not None:
            by_file.setdefault(plan.uri, {})[name] = plan.request
    out: dict[str, np.ndarray] = {}
    for uri, requests in by_file.items():
        decoded = decode_shared(uri, start_frame, end_frame, requests, storage_options=storage_options)
        out.update(decoded)
    return out


def read_plan(plan: FramePlan, storage_options: dict | None = None) -> np.ndarray:
    """The frames one consumer's `plan` names: what a stage decodes when nothing decoded them for it.

    The same frames, to the bit, as the stage gets from a decode shared with other stages.
    """
    return decode_plans({"frames": plan}, storage_options=storage_options)["frames"]


def _get_sized(
    uri: str, wanted: Mapping[Size | None, Sequence[int]], storage_options: dict | None
) -> dict[Size | None, np.ndarray]:
    """One PyAV decode of the union of `wanted`'s indices (clamped to the video), each frame scaled
    to every decoder output size asking for it. Raises DecodeError; a reader that failed is dropped."""
    key = _cache_key(uri, None, "pyav")
    reader = _cached_reader(uri, None, "pyav", storage_options)
    last = reader.num_frames - 1
    if last < 0:
        raise DecodeError(f"{uri}: the video has no frames")
    clamped = {size: [min(max(int(i), 0), last) for i in idx] for size, idx in wanted.items()}
    try:
        return reader.get_sized(clamped)
    except Exception as exc:
        _READERS.pop(key, None)
        reader.close()
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"{uri}: {type(exc).__name__}: {exc}") from exc


def _no_frames(request: FrameRequest) -> np.ndarray:
    """The empty frame array of a request that names no frame (at its size when it has one)."""
    w, h = request.size if request.size is not None else (0, 0)
    return np.zeros((0, h, w, 3), np.uint8)


def decode_shared(
    uri: str,
    start_frame: int,
    end_frame: int,
    requests: Mapping[str, FrameRequest],
    *,
    src_fps: float | None = None,
    backend: Backend = "auto",
    storage_options: dict | None = None,
) -> dict[str, np.ndarray]:
    """Decode a clip once for several consumers; returns each consumer's frames at its own size.

    The union of the requested frames is decoded once (PyAV), and each decoded picture is scaled by
    swscale straight to each size that asks for it (:data:`PLANNED_INTERPOLATION`, one thread). A
    consumer's frames thus never depend on which other consumers share the decode: one request
    alone gives the same bytes. Should that decode fail, each consumer is decoded as it would be
    alone (a failing single request falls back to :func:`read_frames` with `backend`).
    """
    if not requests:
        return {}
    needs_rate = any(req.indices is None for req in requests.values())
    rate = src_fps or (source_fps(uri, backend, storage_options) if needs_rate else 0.0)
    wanted = {name: req.frames(start_frame, end_frame, rate) for name, req in requests.items()}
    if not any(wanted.values()):
        return {name: _no_frames(req) for name, req in requests.items()}
    by_size: dict[Size | None, set[int]] = {}
    for name, req in requests.items():
        if wanted[name]:
            by_size.setdefault(req.size, set()).update(wanted[name])
    try:
        with _READERS_LOCK:
            planned = {size: sorted(indices) for size, indices in by_size.items()}
            decoded = _get(uri, [], None, "pyav", storage_options, planned=planned)
    except DecodeError:
        if len(requests) > 1:  # each consumer as it would decode alone, so its frames still match
            return {
                name: decode_shared(uri, start_frame, end_frame, {name: req}, src_fps=rate or None,
                                    backend=backend, storage_options=storage_options)[name]
                for name, req in requests.items()
            }  # fmt: skip
        ((name, req),) = requests.items()
        frames = read_frames(uri, wanted[name], req.size, backend=backend, storage_options=storage_options)
        return {name: frames}
    out: dict[str, np.ndarray] = {}
    for name, req in requests.items():
        if not wanted[name]:
            out[name] = _no_frames(req)
            continue
        position = {index: k for k, index in enumerate(sorted(by_size[req.size]))}
        out[name] = decoded[req.size][[position[i] for i in wanted[name]]]
    return out
