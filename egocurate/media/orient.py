"""Which way a video is shown: its display matrix as one of the eight quarter-turn/flip transforms.

Phones and headsets store pictures sideways (or mirrored) and record how to show them in a display
matrix. Decoders disagree on it: PyAV returns the coded picture untouched, decord 0.6 turns it by
the matrix's rotation angle but ignores a mirror. :func:`display_orientation` reads the matrix once
per file, and :meth:`Orientation.after` says what is left to do after a decoder's own turn, so
every backend returns the picture a player shows, and no frame is ever turned twice.
"""

from __future__ import annotations

import math
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from egocurate.media.files import file_stamp, is_remote, open_source

_CACHE_SIZE = 256  # files whose orientation is remembered per process
_CACHE: OrderedDict[tuple, FileOrientation] = OrderedDict()
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Orientation:
    """upright = ``np.rot90(hflip(coded) if flip else coded, turns)``: counter-clockwise quarter turns."""

    flip: bool = False
    turns: int = 0

    @property
    def transposes(self) -> bool:
        """True when width and height trade places."""
        return self.turns % 2 == 1

    @property
    def is_identity(self) -> bool:
        return not self.flip and self.turns % 4 == 0

    def then(self, other: Orientation) -> Orientation:
        """This transform followed by `other`."""
        sign = -1 if other.flip else 1
        return Orientation(self.flip != other.flip, (other.turns + sign * self.turns) % 4)

    def after(self, turns: int) -> Orientation:
        """What is left to apply to a picture a decoder already turned by `turns` quarter turns."""
        return Orientation(False, -turns % 4).then(self)

    def coded_size(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        """The (width, height) to decode at so the transformed picture is `size`."""
        if size is None or not self.transposes:
            return size
        return int(size[1]), int(size[0])

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """`frames` (N, H, W, C) transformed."""
        if self.is_identity:
            return frames
        out = frames[:, :, ::-1] if self.flip else frames
        return np.ascontiguousarray(np.rot90(out, k=self.turns % 4, axes=(1, 2)))


IDENTITY = Orientation()


def _matrix_of(flip: bool, turns: int) -> np.ndarray:
    """2x2 linear part, in FFmpeg's row-vector convention ((x', y') = (x, y) M, y pointing down)."""
    mirror = np.array([[-1.0, 0.0], [0.0, 1.0]]) if flip else np.eye(2)
    quarter = np.array([[0.0, -1.0], [1.0, 0.0]])
    return mirror @ np.linalg.matrix_power(quarter, turns % 4)


def from_display_matrix(matrix: bytes | None) -> Orientation:
    """The transform nearest to a display matrix (36 bytes, nine int32; FFmpeg's layout)."""
    if not matrix or len(matrix) < 36:
        return IDENTITY
    m = struct.unpack("<9i", bytes(matrix[:36]))
    linear = np.array([[m[0], m[1]], [m[3], m[4]]], dtype=np.float64)
    scale = np.abs(linear).max()
    if scale == 0:
        return IDENTITY
    linear /= scale
    candidates = [Orientation(f, k) for f in (False, True) for k in range(4)]
    return min(candidates, key=lambda o: float(np.abs(_matrix_of(o.flip, o.turns) - linear).sum()))


def rotation_turns(matrix: bytes | None) -> int:
    """Quarter turns (counter-clockwise) of a display matrix's rotation angle alone, as FFmpeg's
    ``av_display_rotation_get`` reads it: what decord turns a picture by (it ignores mirroring)."""
    if not matrix or len(matrix) < 36:
        return 0
    m = struct.unpack("<9i", bytes(matrix[:36]))
    scale0, scale1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale0 == 0 or scale1 == 0:
        return 0
    ccw = -math.degrees(math.atan2(m[1] / scale1, m[0] / scale0))
    return int(round(ccw / 90.0)) % 4


def _read_matrix(uri: str, storage_options: dict | None) -> bytes | None:
    """The display matrix the first decoded frame carries (PyAV attaches the stream's), or None."""
    import av

    source, handle = open_source(uri, storage_options)
    try:
        with av.open(source, metadata_errors="ignore") as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            stream.thread_type = "NONE"  # one frame: a thread pool would cost more than it saves
            for frame in container.decode(stream):
                side = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
                return bytes(side) if side is not None else None
    finally:
        if handle is not None:
            handle.close()
    return None


@dataclass(frozen=True)
class FileOrientation:
    """How to show a file's pictures, and how far decord already turns them."""

    upright: Orientation
    decord_turns: int

    @property
    def after_decord(self) -> Orientation:
        return self.upright.after(self.decord_turns)


def display_orientation(uri: str, storage_options: dict | None = None) -> FileOrientation:
    """The file's :class:`FileOrientation`, read once per file per process (by PyAV).

    A file that cannot be read gets the identity: the decoders then report their own error.
    """
    stamp = file_stamp(uri)
    if not stamp and not is_remote(uri):  # a missing file: its decoder reports it
        return FileOrientation(IDENTITY, 0)
    key = (uri, stamp)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    try:
        matrix = _read_matrix(uri, storage_options)
    except Exception:  # noqa: BLE001 - an unreadable file: the decoder that opens it reports why
        return FileOrientation(IDENTITY, 0)
    found = FileOrientation(from_display_matrix(matrix), rotation_turns(matrix))
    with _CACHE_LOCK:
        _CACHE[key] = found
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return found
