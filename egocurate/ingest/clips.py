"""Clip policy and materialization: shots become trainer-sized clips, virtual or transcoded.

Policy (:class:`ClipPolicy`): transition frames never enter a clip (a shot excludes them) and a few
more frames are trimmed beside every boundary, so a boundary found one frame off cannot leak the
other shot in. A *weak* boundary (``Transition.confidence`` below ``weak_below``) trims nothing:
its transition frames are split between the shots either side, and a clip shorter than ``min_s``
next to it is merged across it instead of being dropped (egocentric footage is mostly long takes,
where a doubtful boundary is more often a head turn than an edit). Other shots shorter than
``min_s`` give no clip; shots longer than ``max_s`` are cut into even windows (DreamDojo's
pretraining clips are about 20 s; its loader takes 13 consecutive frames).
Optional 4:3 centre crop, resize and target frame rate describe the frames a consumer gets.

Materialization, chosen per run:

- ``virtual``: rows with frame ranges and times, no re-encode (consumers decode the source);
- ``transcode``: an H.264 MP4 per clip with ffmpeg: input seek (frame-accurate, the clip starts on a
  keyframe), ``-frames:v`` for an exact length, ``+faststart``; ``libx264`` or ``h264_nvenc``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from egocurate.ingest.shots import Shot, VideoTiming
from egocurate.media.crop import even_crop_box
from egocurate.media.decode import indices_at_fps, is_remote, local_path
from egocurate.media.tools import ffmpeg_exe

Encoder = Literal["auto", "libx264", "h264_nvenc"]


@dataclass(frozen=True)
class ClipPolicy:
    """How shots become clips (see the module docstring)."""

    min_s: float = 2.0
    max_s: float = 20.0
    trim_frames: int = 1  # dropped beside every boundary (cut or gradual), on both sides
    crop_4_3: bool = False
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    weak_below: float = 0.6  # a boundary less confident than this trims nothing; short clips merge across it

    def __post_init__(self) -> None:
        if self.min_s < 0 or self.max_s <= 0:
            raise ValueError(f"clip lengths must be positive: min_s={self.min_s}, max_s={self.max_s}")
        if self.max_s < self.min_s:
            raise ValueError(f"max_s ({self.max_s}) must be >= min_s ({self.min_s})")
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height, or neither")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClipSpec:
    """One clip of a video: source frames [start_frame, end_frame) and their times in seconds."""

    index: int
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    kind: str  # how the clip begins: start, cut, dissolve, fade, gradual, window, split

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def config_version(config: dict) -> str:
    """Short stable hash of a split configuration (part of every clip id)."""
    blob = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(blob.encode(), digest_size=4).hexdigest()


def clip_id_for(video_id: str, start_frame: int, end_frame: int, version: str) -> str:
    """Stable 16-hex-digit id of a clip: (video, frame range, split config version)."""
    key = f"{video_id}:{int(start_frame)}:{int(end_frame)}:{version}"
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def _split_evenly(start: int, end: int, timing: VideoTiming, pieces: int) -> list[int]:
    """Frame boundaries cutting [start, end) into `pieces` windows of equal duration (VFR-aware)."""
    t0, t1 = timing.time_of(start), timing.time_of(end)
    bounds = [start]
    for k in range(1, pieces):
        target = t0 + (t1 - t0) * k / pieces
        frame = int(np.searchsorted(timing.timestamps, target - 1e-9, side="left"))
        bounds.append(min(max(frame, bounds[-1] + 1), end - 1))
    bounds.append(end)
    return bounds


def _segments(shots: Sequence[Shot], policy: ClipPolicy) -> list[list]:
    """[start, end, kind, weak_open, trim_start, trim_end] per shot after the weak-boundary rules."""
    ordered = sorted(shots, key=lambda s: s.start_frame)
    segs: list[list] = []
    for k, shot in enumerate(ordered):
        opened = k > 0 or shot.kind != "start"
        weak = k > 0 and shot.confidence < policy.weak_below
        start = shot.start_frame
        if weak:  # the transition's frames go half to each side; nothing is trimmed
            mid = (segs[-1][1] + start) // 2
            segs[-1][1], segs[-1][5] = mid, 0
            start = mid
        segs.append([start, shot.end_frame, shot.kind, weak,
                     policy.trim_frames if opened and not weak else 0,
                     policy.trim_frames if k + 1 < len(ordered) else 0])  # fmt: skip
    return segs


def plan_clips(shots: Sequence[Shot], timing: VideoTiming, policy: ClipPolicy) -> list[ClipSpec]:
    """Clips of a video from its shots, by `policy` (no clip, and no error, for a too-short video)."""

    def seconds(seg: list) -> float:
        a, b = seg[0] + seg[4], seg[1] - seg[5]
        return timing.time_of(b) - timing.time_of(a) if b > a else 0.0

    merged: list[list] = []
    for seg in _segments(shots, policy):
        if (
            merged
            and seg[3]
            and (seconds(merged[-1]) + 1e-9 < policy.min_s or seconds(seg) + 1e-9 < policy.min_s)
        ):
            merged[-1][1], merged[-1][5] = seg[1], seg[5]  # a short piece beside a weak boundary: merge
            continue
        merged.append(seg)
    clips: list[ClipSpec] = []
    for seg in merged:
        start, end, kind = seg[0] + seg[4], seg[1] - seg[5], seg[2]
        if end - start < 1:
            continue
        duration = timing.time_of(end) - timing.time_of(start)
        if duration + 1e-9 < policy.min_s:
            continue
        pieces = max(1, math.ceil(duration / policy.max_s - 1e-9))
        bounds = _split_evenly(start, end, timing, pieces) if pieces > 1 else [start, end]
        for p, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            t_a, t_b = timing.time_of(a), timing.time_of(b)
            if t_b - t_a + 1e-9 < policy.min_s:
                continue
            clips.append(
                ClipSpec(
                    len(clips), int(a), int(b), round(t_a, 6), round(t_b, 6), kind if p == 0 else "split"
                )
            )
    return clips


def upright_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    return (height, width) if (int(round((rotation or 0) / 90.0)) % 2) else (width, height)


@dataclass(frozen=True)
class ClipGeometry:
    """What a consumer of a clip gets: crop box (upright source pixels), output size and rate."""

    crop: tuple[int, int, int, int] | None
    width: int
    height: int
    fps: float
    num_frames: int


def clip_geometry(
    spec: ClipSpec, src_width: int, src_height: int, rotation: int, src_fps: float, policy: ClipPolicy,
    timing: VideoTiming | None = None,
) -> ClipGeometry:  # fmt: skip
    """Crop, size, rate and frame count of `spec` under `policy`."""
    w, h = upright_size(src_width, src_height, rotation)
    crop = even_crop_box(w, h, 4 / 3) if policy.crop_4_3 else None
    out_w, out_h = (crop[2], crop[3]) if crop else (w, h)
    if policy.width is not None and policy.height is not None:
        out_w, out_h = policy.width, policy.height
    fps = src_fps
    count = spec.num_frames
    if policy.fps and src_fps and policy.fps < src_fps:
        ts = timing.timestamps if timing is not None else None
        count = len(indices_at_fps(spec.start_frame, spec.end_frame, src_fps, policy.fps, ts))
        fps = policy.fps
    return ClipGeometry(crop, int(out_w), int(out_h), float(fps), int(count))


# ------------------------------------------------------------------------------------- transcoding
@functools.cache
def nvenc_available() -> bool:
    """True when ffmpeg has h264_nvenc and an NVIDIA GPU is visible."""
    try:
        out = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return False
    if "h264_nvenc" not in out.stdout:
        return False
    return shutil.which("nvidia-smi") is not None or os.path.exists("/dev/nvidiactl")


def pick_encoder(encoder: Encoder) -> str:
    if encoder == "auto":
        return "h264_nvenc" if nvenc_available() else "libx264"
    return encoder


def _video_offset_s(path: str) -> float:
    """Seconds between the container's start time (what ffmpeg's -ss counts from) and the first frame."""
    import av

    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        pts = []
        for packet in container.demux(stream):
            if packet.pts is not None and packet.size:
                pts.append(packet.pts)
            if len(pts) >= 32:  # the first frame in display order is among the first packets
                break
        start = (container.start_time or 0) / 1_000_000
        return float(min(pts) * stream.time_base) - start if pts else 0.0


def transcode_command(
    src: str, dst: str, start_s: float, frames: int, geometry: ClipGeometry, *, encoder: str = "libx264",
    crf: int = 20, threads: int = 1, src_frame_s: float = 1 / 30, offset_s: float = 0.0,
    target_fps: float | None = None,
) -> list[str]:  # fmt: skip
    """The ffmpeg command that cuts [start_s, start_s + frames) from `src` into an H.264 MP4."""
    seek = max(0.0, offset_s + start_s - 0.5 * src_frame_s)  # half a frame early: lands exactly on it
    filters = []
    if geometry.crop is not None:
        x, y, w, h = geometry.crop
        filters.append(f"crop={w}:{h}:{x}:{y}")
    filters.append(f"scale={geometry.width}:{geometry.height}:flags=area")
    filters.append("setsar=1")
    fps_args: list[str] = ["-fps_mode", "passthrough"]
    if target_fps:
        filters.append(f"fps={target_fps:.6f}:start_time=0")
        fps_args = ["-fps_mode", "cfr"]
    if encoder == "h264_nvenc":
        codec = ["-c:v", "h264_nvenc", "-preset", "p4", "-rc", "vbr", "-cq", str(crf), "-bf", "0"]
    else:
        codec = ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-threads", str(max(1, threads))]
    return [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-ss", f"{seek:.6f}", "-i", src,
        "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", ",".join(filters), *fps_args,
        "-frames:v", str(frames), *codec, "-pix_fmt", "yuv420p", "-movflags", "+faststart", dst,
    ]  # fmt: skip


def transcode_clip(
    src_uri: str,
    dst_uri: str,
    spec: ClipSpec,
    geometry: ClipGeometry,
    *,
    encoder: Encoder = "auto",
    crf: int = 20,
    threads: int = 1,
    src_fps: float = 30.0,
    target_fps: float | None = None,
    storage_options: dict | None = None,
) -> str:
    """Write `spec` of `src_uri` as an H.264 MP4 at `dst_uri` (local path or fsspec URL).

    Returns the encoder used: ``auto`` tries ``h264_nvenc`` when it looks available and falls back to
    ``libx264`` when the GPU encoder fails (a CPU-only worker on a GPU node, for one).
    """
    chosen = pick_encoder(encoder)
    with tempfile.TemporaryDirectory(prefix="egocurate-clip-") as tmp:
        src = local_path(src_uri)
        if is_remote(src_uri):  # ffmpeg reads local files; fetch the source once
            import fsspec

            src = os.path.join(tmp, "source" + os.path.splitext(src_uri)[1])
            with fsspec.open(src_uri, "rb", **(storage_options or {})) as fh, open(src, "wb") as out:
                shutil.copyfileobj(fh, out, 1 << 22)
        local_dst = os.path.join(tmp, "clip.mp4") if is_remote(dst_uri) else local_path(dst_uri)
        os.makedirs(os.path.dirname(os.path.abspath(local_dst)), exist_ok=True)
        offset = _video_offset_s(src)
        cmd = transcode_command(
            src, local_dst, spec.start_s, geometry.num_frames, geometry, encoder=chosen, crf=crf,
            threads=threads, src_frame_s=1.0 / (src_fps or 30.0), offset_s=offset, target_fps=target_fps,
        )  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 and chosen == "h264_nvenc" and encoder == "auto":  # no usable GPU after all
            cmd = transcode_command(
                src, local_dst, spec.start_s, geometry.num_frames, geometry, encoder="libx264", crf=crf,
                threads=threads, src_frame_s=1.0 / (src_fps or 30.0), offset_s=offset, target_fps=target_fps,
            )  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            chosen = "libx264"
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed cutting {src_uri} -> {dst_uri}: {proc.stderr.strip()[-400:]}")
        if is_remote(dst_uri):
            import fsspec

            with open(local_dst, "rb") as fh, fsspec.open(dst_uri, "wb", **(storage_options or {})) as out:
                shutil.copyfileobj(fh, out, 1 << 22)
    return chosen
