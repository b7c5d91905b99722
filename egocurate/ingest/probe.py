"""Probe a video's metadata and classify why a file cannot be used.

PyAV is the default backend: it reads the fields in-process from the same libav* demuxers ffprobe
uses, so a file costs no process start (~0.17 CPU-s per ffprobe run). `ffprobe` (through
ffmpeg-python) is the reference backend, and the fallback when PyAV cannot open a local file: then
ffprobe names what is wrong with it (`truncated`, `audio_only`, ...), or, when ffprobe does read
it, the file is `unreadable` because every stage decodes with PyAV. Either backend then checks the
tail with PyAV (one frame decoded from the keyframe before the last second, packets demuxed to
within 2 s of the end), which catches truncated files whose header still claims the full length.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Literal

from egocurate.catalog import tables
from egocurate.media.tools import ffprobe_exe
from egocurate.storage import fsspec_options

# Bounds beyond which metadata is not credible for a first-person recording.
MAX_DURATION_S = 48 * 3600.0
MAX_FPS = 1000.0
MAX_SIDE = 16384
VFR_TOLERANCE = 0.01

Backend = Literal["auto", "ffprobe", "pyav"]


class ProbeError(Exception):
    """A file that cannot be ingested, with an error kind from :mod:`egocurate.catalog.tables`."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass
class VideoInfo:
    """What ingest records about a readable video."""

    duration_s: float
    fps: float
    avg_fps: float
    real_fps: float
    num_frames: int
    width: int
    height: int
    codec: str
    pix_fmt: str | None
    rotation: int
    has_audio: bool
    bitrate: int | None
    is_vfr: bool
    probe_backend: str

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def _rate(value: Any) -> float:
    """A frame rate from '30000/1001', a Fraction or a number; 0.0 when unknown."""
    if value in (None, "", "0/0"):
        return 0.0
    try:
        rate = float(Fraction(str(value))) if not isinstance(value, (int, float)) else float(value)
    except (ValueError, ZeroDivisionError):
        return 0.0
    return rate if math.isfinite(rate) else 0.0


def _norm_rotation(value: Any) -> int:
    """Display rotation in degrees counter-clockwise, in [0, 360) (ffprobe's and PyAV's convention)."""
    try:
        return int(round(float(value))) % 360
    except (TypeError, ValueError):
        return 0


CONTAINER_MAGIC = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")


def _looks_like_container(head: bytes) -> bool:
    """True when the first bytes carry a video container signature (MP4/MOV, Matroska, AVI, MPEG-TS)."""
    return (
        head[4:8] in CONTAINER_MAGIC
        or head.startswith(b"\x1a\x45\xdf\xa3")
        or head.startswith(b"RIFF")
        or head[:1] == b"\x47"
    )


def _classify_open_error(message: str, head: bytes = b"") -> str:
    """Error kind for a file the demuxer refused: a real container cut short is `truncated`."""
    lowered = message.lower()
    if "no such file" in lowered or "does not exist" in lowered:
        return tables.NOT_FOUND
    truncation = "moov atom not found" in lowered or "end of file" in lowered or "truncat" in lowered
    if truncation and _looks_like_container(head):
        return tables.TRUNCATED
    return tables.UNREADABLE


def _head(path: str | None, handle: Any = None) -> bytes:
    try:
        if handle is not None:
            position = handle.tell()
            data = handle.read(16)
            handle.seek(position)
            return data
        with open(path, "rb") as fh:
            return fh.read(16)
    except OSError:
        return b""


def _finish(
    backend: str,
    duration: float,
    avg_fps: float,
    real_fps: float,
    frames: int,
    width: int,
    height: int,
    codec: str,
    pix_fmt: str | None,
    rotation: int,
    has_audio: bool,
    bitrate: int | None,
) -> VideoInfo:
    fps = avg_fps or real_fps
    if frames <= 0 and duration > 0 and fps > 0:
        frames = int(round(duration * fps))
    if duration <= 0 and frames > 0 and fps > 0:
        duration = frames / fps
    is_vfr = bool(avg_fps and real_fps and abs(avg_fps - real_fps) / real_fps > VFR_TOLERANCE)
    info = VideoInfo(
        duration_s=round(float(duration), 6),
        fps=round(float(fps), 6),
        avg_fps=round(float(avg_fps), 6),
        real_fps=round(float(real_fps), 6),
        num_frames=int(frames),
        width=int(width),
        height=int(height),
        codec=codec,
        pix_fmt=pix_fmt,
        rotation=rotation,
        has_audio=has_audio,
        bitrate=int(bitrate) if bitrate else None,  # replaced by size*8/duration in probe()
        is_vfr=is_vfr,
        probe_backend=backend,
    )
    check_metadata(info)
    return info


def check_metadata(info: VideoInfo) -> None:
    """Raise `absurd_metadata` for values no real recording has."""
    problems = []
    if not (0 < info.duration_s <= MAX_DURATION_S):
        problems.append(f"duration_s={info.duration_s}")
    if not (0 < info.fps <= MAX_FPS):
        problems.append(f"fps={info.fps}")
    if not (0 < info.width <= MAX_SIDE and 0 < info.height <= MAX_SIDE):
        problems.append(f"size={info.width}x{info.height}")
    if info.num_frames < 1:
        problems.append(f"num_frames={info.num_frames}")
    if problems:
        raise ProbeError(tables.ABSURD_METADATA, ", ".join(problems))


# ---------------------------------------------------------------------------------------- ffprobe
def _probe_ffprobe(path: str) -> VideoInfo:
    import ffmpeg

    try:
        meta = ffmpeg.probe(path, cmd=ffprobe_exe() or "ffprobe")
    except ffmpeg.Error as exc:
        stderr = (exc.stderr or b"").decode("utf-8", "replace").strip()
        last = stderr.splitlines()[-1] if stderr else str(exc)
        raise ProbeError(_classify_open_error(stderr, _head(path)), last) from None
    streams = meta.get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video" and not _is_attached_pic(s)]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not video:
        raise _no_video(bool(audio))
    vs = video[0]
    fmt = meta.get("format", {})
    duration = float(vs.get("duration") or fmt.get("duration") or 0.0)
    rotation = 0
    for side in vs.get("side_data_list", []) or []:
        if "rotation" in side:
            rotation = _norm_rotation(side["rotation"])
    if not rotation and "rotate" in (vs.get("tags") or {}):  # ffmpeg < 5 wrote a clockwise tag
        rotation = _norm_rotation(-float(vs["tags"]["rotate"]))
    return _finish(
        "ffprobe",
        duration,
        _rate(vs.get("avg_frame_rate")),
        _rate(vs.get("r_frame_rate")),
        int(vs.get("nb_frames") or 0),
        int(vs.get("width") or 0),
        int(vs.get("height") or 0),
        str(vs.get("codec_name") or "unknown"),
        vs.get("pix_fmt"),
        rotation,
        bool(audio),
        int(fmt["bit_rate"]) if fmt.get("bit_rate") else None,
    )


def _is_attached_pic(stream: dict) -> bool:
    return bool((stream.get("disposition") or {}).get("attached_pic"))


def _no_video(has_audio: bool) -> ProbeError:
    if has_audio:
        return ProbeError(tables.AUDIO_ONLY, "the file has audio but no video stream")
    return ProbeError(tables.NO_VIDEO_STREAM, "the container holds no video stream")


# ------------------------------------------------------------------------------------------ PyAV
def _open_av(source: Any):
    import av

    head = _head(source if isinstance(source, str) else None, None if isinstance(source, str) else source)
    try:
        return av.open(source, mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise ProbeError(_classify_open_error(str(exc), head), str(exc)) from None


def _probe_pyav(container: Any) -> VideoInfo:
    """The stream's fields from the container header; `rotation` is filled in by :func:`_check_tail`,
    which decodes a frame anyway (PyAV exposes the display matrix per frame, not per stream)."""
    video = [
        s for s in container.streams.video if not (s.disposition and "attached_pic" in str(s.disposition))
    ]
    audio = list(container.streams.audio)
    if not video:
        raise _no_video(bool(audio))
    vs = video[0]
    duration = float(vs.duration * vs.time_base) if vs.duration and vs.time_base else 0.0
    if duration <= 0 and container.duration:
        duration = container.duration / 1_000_000
    cc = vs.codec_context
    return _finish(
        "pyav",
        duration,
        _rate(vs.average_rate),
        _rate(vs.base_rate),
        int(vs.frames or 0),
        int(cc.width or 0),
        int(cc.height or 0),
        str(cc.name or "unknown"),
        cc.format.name if cc.format is not None else None,
        0,
        bool(audio),
        int(container.bit_rate) if container.bit_rate else None,
    )


def _timestamps_vary(container: Any, packets: int = 240) -> bool:
    """True when the first `packets` video timestamps are unevenly spaced (variable frame rate).

    Containers such as Matroska carry no frame count or average rate worth trusting, so the rate
    heuristic alone misses VFR there; demuxing (no decoding) a few hundred packets is cheap.
    """
    import av

    stream = container.streams.video[0]
    stamps = []
    try:
        for packet in container.demux(stream):
            if packet.pts is not None:
                stamps.append(packet.pts)
            if len(stamps) >= packets:
                break
    except av.error.FFmpegError:
        return False
    # Decode order differs from presentation order (B-frames): the last packets read may run ahead of
    # frames not read yet, so drop a reorder window's worth before looking at the gaps.
    stamps = sorted(stamps)
    if len(stamps) >= packets:  # stopped early: the tail may have holes B-frames will fill later
        stamps = stamps[:-16]
    deltas = [b - a for a, b in zip(stamps, stamps[1:], strict=False) if b > a]
    if len(deltas) < 4:
        return False
    median = sorted(deltas)[len(deltas) // 2]
    uneven = sum(1 for d in deltas if d > 1.5 * median or d < median / 1.5)
    return uneven > 0.05 * len(deltas)  # a dropped frame or two is not a variable-rate stream


def _check_tail(container: Any, info: VideoInfo) -> int:
    """Prove the data reaches the last seconds; return the display rotation of the frame decoded there.

    Seek to the keyframe before the final second, decode until one frame comes out (the data there
    is a picture), then only demux until a packet stamped within 2 s of the end: a truncated file
    has a header but no packets there. Demuxing rather than decoding the rest keeps a long GOP
    (a keyframe every 10 s) from costing hundreds of decoded frames per file.
    """
    import av

    vs = container.streams.video[0]
    target_s = max(0.0, info.duration_s - 1.0)
    time_base = float(vs.time_base) if vs.time_base else 0.0
    rotation = None
    last_s = -1.0
    try:
        if time_base:
            container.seek(int(target_s / time_base), stream=vs, backward=True, any_frame=False)
        for packet in container.demux(vs):
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is not None and time_base:
                last_s = max(last_s, stamp * time_base)
            if rotation is None:
                for frame in packet.decode():
                    rotation = _norm_rotation(getattr(frame, "rotation", 0) or 0)
                    if frame.time is not None:
                        last_s = max(last_s, float(frame.time))
                    break
            if rotation is not None and last_s >= target_s - 1.0:
                break
    except av.error.FFmpegError as exc:
        raise ProbeError(tables.TRUNCATED, f"cannot decode near the end: {exc}") from None
    if last_s < target_s - 1.0:
        raise ProbeError(
            tables.TRUNCATED,
            f"header says {info.duration_s:.2f}s but the data ends at {max(last_s, 0):.2f}s",
        )
    if rotation is None:
        raise ProbeError(tables.TRUNCATED, f"no frame decodes near the end ({target_s:.2f}s)")
    return rotation


def _open_source(uri: str, storage_options: dict | None) -> tuple[Any, Any]:
    """(container source for PyAV, file handle to close or None)."""
    if "://" in uri and not uri.startswith("file://"):
        import fsspec

        fh = fsspec.open(uri, "rb", **fsspec_options(storage_options)).open()
        return fh, fh
    return (uri[len("file://") :] if uri.startswith("file://") else uri), None


def _ffprobe_diagnosis(local_path: str, pyav_error: ProbeError) -> ProbeError:
    """The error to report for a local file PyAV cannot open, asking ffprobe (the fallback).

    ffprobe's own refusal is reported as it is (it was the primary backend, so quarantines say what
    they always said); a file ffprobe reads but PyAV cannot is `unreadable`, because every stage
    decodes with PyAV.
    """
    try:
        info = _probe_ffprobe(local_path)
    except ProbeError as exc:
        return exc
    return ProbeError(
        tables.UNREADABLE,
        f"ffprobe reads a {info.codec} {info.width}x{info.height} video, but PyAV, which every stage "
        f"decodes with, cannot open it: {pyav_error.message}",
    )


def probe(uri: str, backend: Backend = "auto", storage_options: dict | None = None) -> VideoInfo:
    """Metadata of the video at `uri`; raises :class:`ProbeError` with a kind for unusable files.

    `auto` (the default) probes in-process with PyAV and asks ffprobe only about a local file PyAV
    cannot open; `pyav` never runs ffprobe; `ffprobe` takes the fields from ffprobe (the reference)
    and checks the tail with PyAV.
    """
    remote = "://" in uri and not uri.startswith("file://")
    local_path = None if remote else (uri[len("file://") :] if uri.startswith("file://") else uri)
    if local_path is not None:
        if not os.path.exists(local_path):
            raise ProbeError(tables.NOT_FOUND, f"no such file: {local_path}")
        if os.path.getsize(local_path) == 0:
            raise ProbeError(tables.ZERO_LENGTH, "the file is empty (0 bytes)")
    if backend not in ("auto", "ffprobe", "pyav"):
        raise ValueError(f"backend must be one of 'auto', 'ffprobe', 'pyav', got {backend!r}")
    if backend == "ffprobe" and (remote or ffprobe_exe() is None):
        raise ValueError("the ffprobe backend needs a local file and an ffprobe binary on PATH")
    info = _probe_ffprobe(local_path) if backend == "ffprobe" else None
    source, handle = _open_source(uri, storage_options)
    try:
        if remote and handle is not None and getattr(handle, "size", None) == 0:
            raise ProbeError(tables.ZERO_LENGTH, "the file is empty (0 bytes)")
        try:
            container = _open_av(source)
        except ProbeError as exc:
            if backend == "auto" and local_path is not None and ffprobe_exe() is not None:
                raise _ffprobe_diagnosis(local_path, exc) from None
            raise
        try:
            if info is None:
                info = _probe_pyav(container)
            info.is_vfr = info.is_vfr or _timestamps_vary(container)
            rotation = _check_tail(container, info)
            if info.probe_backend == "pyav":
                info.rotation = rotation
        finally:
            container.close()
    finally:
        if handle is not None:
            handle.close()
    size = os.path.getsize(local_path) if local_path is not None else getattr(handle, "size", None)
    if size and info.duration_s > 0:
        # The same formula on every backend, so ffprobe and PyAV rows are identical.
        info.bitrate = int(size * 8 / info.duration_s)
    return info
