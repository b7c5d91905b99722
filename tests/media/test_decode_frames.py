"""Frame access (egocurate.media.decode): decord, PyAV fallback, seeking, sizes, rates, shared decode."""

from __future__ import annotations

import subprocess

import fsspec
import numpy as np
import pytest

from egocurate.media import decode, scan
from egocurate.media.tools import ffmpeg_exe
from egocurate.testing.videos import encode_frames

FPS = 15.0


def _coded_frames(count: int, width: int = 96, height: int = 64) -> list[np.ndarray]:
    """Frames whose number is written as 6 black/white blocks across the top half (readable at any
    size down to 24 px wide), with a moving bar below so that consecutive frames differ."""
    frames = []
    for k in range(count):
        img = np.zeros((height, width, 3), np.uint8)
        for bit in range(6):
            if (k >> bit) & 1:
                img[: height // 2, bit * width // 6 : (bit + 1) * width // 6] = 255
        x = (k * 3) % (width - 4)
        img[height // 2 + 4 :, x : x + 4] = 200
        frames.append(img)
    return frames


def _number(frame: np.ndarray) -> int:
    h, w = frame.shape[:2]
    gray = frame.mean(axis=2)
    bits = [gray[h // 4, int((b + 0.5) * w / 6)] > 128 for b in range(6)]
    return sum(1 << b for b, on in enumerate(bits) if on)


def _numbers(frames: np.ndarray) -> list[int]:
    return [_number(f) for f in frames]


def rotate_copy(src, dst, ccw: int) -> None:
    """Copy `src` with a display rotation of `ccw` degrees counter-clockwise (newer ffmpeg has
    -display_rotation; ffmpeg 5 writes the display matrix from the legacy `rotate` tag)."""
    base = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    new = subprocess.run(base + ["-display_rotation", str(ccw), "-i", str(src), "-c", "copy", str(dst)])
    if new.returncode != 0:
        subprocess.run(
            base + ["-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={ccw}", str(dst)], check=True
        )


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("decode") / "levels.mp4"
    encode_frames(_coded_frames(60), path, FPS, crf=10)  # x264 with B-frames: decode order != display order
    return str(path)


def test_decord_and_pyav_agree_on_every_frame_index(video):
    idx = [0, 1, 2, 17, 30, 31, 59]
    a = decode.read_frames(video, idx, backend="decord")
    b = decode.read_frames(video, idx, backend="pyav")
    assert a.shape == b.shape == (len(idx), 64, 96, 3)
    assert np.array_equal(a, b)  # the same frames, converted the same way
    assert _numbers(a) == idx


def test_seeking_in_any_order_and_reduced_resolution(video):
    idx = [50, 3, 3, 41, 0, 59, 12]
    for backend in ("auto", "decord", "pyav"):
        for size in ((32, 24), (48, 32)):  # decord's own scaler fails on 48x32; it is resized here then
            frames = decode.read_frames(video, idx, size=size, backend=backend)
            assert frames.shape == (len(idx), size[1], size[0], 3)
            assert _numbers(frames) == idx, (backend, size)
    clamped = decode.read_frames(video, [-5, 500])
    assert _numbers(clamped) == [0, 59]


def test_pyav_fallback_opens_what_decord_cannot(video):
    """An object-store URL: decord cannot open it, the PyAV path streams it through fsspec."""
    with open(video, "rb") as fh:
        data = fh.read()
    with fsspec.open("memory://egocurate-test/levels.mp4", "wb") as fh:
        fh.write(data)
    reader = decode.open_reader("memory://egocurate-test/levels.mp4")
    assert reader.backend == "pyav"
    frames = decode.read_frames("memory://egocurate-test/levels.mp4", [5, 40], size=(48, 32))
    assert _numbers(frames) == [5, 40]
    with pytest.raises(decode.DecodeError):
        decode.read_frames("memory://egocurate-test/missing.mp4", [0])


def test_target_fps_indices_and_clip_reads(video):
    assert decode.indices_at_fps(0, 30, 30.0, 10.0) == list(range(0, 30, 3))
    assert decode.indices_at_fps(10, 40, 15.0, None) == list(range(10, 40))
    assert decode.indices_at_fps(0, 20, 15.0, 30.0) == list(range(20))  # never above the source rate
    # VFR: frames 0-9 every 0.1 s, then every 0.02 s; at 10 fps the picks follow real time
    ts = np.r_[np.arange(10) * 0.1, 1.0 + np.arange(1, 41) * 0.02]
    assert decode.indices_at_fps(0, 50, 22.0, 10.0, timestamps=ts) == [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        14,
        19,
        24,
        29,
        34,
        39,
        44,
        49,
    ]
    clip = decode.read_clip(video, 6, 36, fps=5.0, size=(32, 24))
    assert clip.shape == (10, 24, 32, 3)
    assert _numbers(clip) == list(range(6, 36, 3))


def test_iter_frames_bounds_each_batch(video):
    idx = list(range(0, 60, 2))
    batches = list(decode.iter_frames(video, idx, (32, 24), batch_frames=7))
    assert all(len(chunk) <= 7 and frames.shape[0] == len(chunk) for chunk, frames in batches)
    assert [i for chunk, _ in batches for i in chunk] == idx
    joined = np.concatenate([frames for _, frames in batches])
    assert np.array_equal(joined, decode.read_frames(video, idx, (32, 24)))


def test_one_decode_feeds_several_consumers(video):
    requests = {
        "embed": decode.FrameRequest(num_frames=4, size=(32, 24)),
        "quality": decode.FrameRequest(fps=5.0, size=(48, 32)),
        "full": decode.FrameRequest(num_frames=2),
    }
    out = decode.decode_shared(video, 10, 40, requests)
    assert out["embed"].shape == (4, 24, 32, 3)
    assert out["quality"].shape == (10, 32, 48, 3)
    assert out["full"].shape == (2, 64, 96, 3)
    assert _numbers(out["embed"]) == decode.sample_indices(10, 40, 4)
    assert _numbers(out["quality"]) == list(range(10, 40, 3))


def test_rotation_matches_what_a_player_shows(tmp_path):
    width, height = 64, 48
    frames = []
    for _ in range(10):
        img = np.zeros((height, width, 3), np.uint8)
        img[:12, :16] = 255  # marker in the top-left corner
        frames.append(img)
    plain = tmp_path / "plain.mp4"
    encode_frames(frames, plain, FPS, crf=10)
    rotated = tmp_path / "rotated.mp4"
    rotate_copy(plain, rotated, 270)
    from egocurate.ingest.probe import probe

    rotation = probe(str(rotated)).rotation
    assert rotation in (90, 270)
    # what ffmpeg (autorotate) displays
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(rotated), "-frames:v", "1"]
    raw = subprocess.run(
        cmd + ["-f", "rawvideo", "-pix_fmt", "gray", "-"], capture_output=True, check=True
    ).stdout
    shown = np.frombuffer(raw, np.uint8).reshape(width, height)  # upright: 48 wide, 64 tall
    ours = decode.read_frames(str(rotated), [0])[0].mean(axis=2)  # upright: the file says how
    assert ours.shape == shown.shape == (64, 48)
    assert np.abs(ours - shown).mean() < 8
    small = decode.read_frames(str(rotated), [0], size=(24, 32))
    assert small.shape == (1, 32, 24, 3)


def test_scanner_maps_pts_to_frame_indices_and_decodes_exact_ranges(video):
    scanner = scan.VideoScanner(video, (32, 24), fast=False)
    items = list(scanner.scan("none"))
    index = scanner.index_of([pts for pts, _ in items])
    assert scanner.num_frames == 60 and sorted(index.tolist()) == list(range(60))
    assert all(_number(f) == i for i, (_, f) in zip(index, items, strict=True))
    coarse = scan.VideoScanner(video, (32, 24))
    kept = [p for p, _ in coarse.scan("nonref")]
    assert 0 < len(kept) < 60  # non-reference B-frames were dropped by the decoder
    assert coarse.timestamps()[1] == pytest.approx(1 / FPS)
    exact = dict(coarse.decode_ranges([(20, 26), (44, 47)]))
    assert sorted(exact) == [20, 21, 22, 23, 24, 25, 44, 45, 46]
    assert all(_number(f) == i for i, f in exact.items())
