"""Rotated and mirrored recordings decode as a player shows them, with either backend, and the
latent-action stage, a shard and a DreamDojo export all carry that same upright picture (issue 21).

Each file is the same coded 640x360 video (large enough for decord to serve it) with a different
display matrix written into its track header: quarter turns, a mirror, and the two diagonal
mirrors. What a player shows is ffmpeg's autorotated output; the test's own expectation of each
matrix is checked against it before anything else relies on it.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from egocurate.media import decode
from egocurate.media.crop import crop_resize
from egocurate.media.encode import decode_mp4
from egocurate.media.tools import ffmpeg_exe
from egocurate.testing.videos import make_video

WIDTH, HEIGHT, FPS = 640, 360, 15.0
ONE = 1 << 16  # 1.0 in the matrix's 16.16 fixed point
# name: (a, b, c, d) of the display matrix, and what a player does to the coded picture
MATRICES = {
    "rot0": ((ONE, 0, 0, ONE), lambda f: f),
    "rot90": ((0, -ONE, ONE, 0), lambda f: np.rot90(f, 1, axes=(-3, -2))),
    "rot180": ((-ONE, 0, 0, -ONE), lambda f: np.rot90(f, 2, axes=(-3, -2))),
    "rot270": ((0, ONE, -ONE, 0), lambda f: np.rot90(f, 3, axes=(-3, -2))),
    "mirror": ((-ONE, 0, 0, ONE), lambda f: f[..., :, ::-1, :]),
    "mirror_vertical": ((ONE, 0, 0, -ONE), lambda f: f[..., ::-1, :, :]),
    "transpose": ((0, ONE, ONE, 0), lambda f: np.swapaxes(f, -3, -2)),
}
PIPELINE_CASES = ("rot0", "rot90", "rot180", "rot270", "mirror")
BACKENDS = ("decord", "pyav")
OUT_W, OUT_H = 128, 96  # LAM input, shard and export size (4:3, as DreamDojo trains)


def with_display_matrix(src: Path, dst: Path, abcd: tuple[int, int, int, int]) -> None:
    """Copy an MP4 with its video track header's matrix replaced (what a phone writes; works with
    any ffmpeg, where ``-display_rotation``/``-display_hflip`` need ffmpeg >= 6)."""
    data = bytearray(src.read_bytes())
    at = data.find(b"tkhd")
    assert at > 0
    version = data[at + 4]
    matrix_at = at + 8 + (20 if version == 0 else 32) + 16  # times, ids and duration; then 16 bytes
    a, b, c, d = abcd
    struct.pack_into(">9i", data, matrix_at, a, b, 0, c, d, 0, 0, 0, 1 << 30)
    dst.write_bytes(bytes(data))


def player_frame(path: Path) -> np.ndarray:
    """Frame 0 as ffmpeg shows it (autorotate applies the display matrix), via PPM."""
    ppm = subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-i",
            str(path),
            "-frames:v",
            "1",
            "-f",
            "image2pipe",
            "-c:v",
            "ppm",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    header, rest = ppm.split(b"\n", 1)
    dims, rest = rest.split(b"\n", 1)
    _, rest = rest.split(b"\n", 1)  # max value
    w, h = (int(v) for v in dims.split())
    return np.frombuffer(rest[: w * h * 3], np.uint8).reshape(h, w, 3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The coded video, and one copy per display matrix (each in its own folder, for ingest)."""
    root = tmp_path_factory.mktemp("rotation")
    base = root / "base.mp4"
    make_video(base, seed=21, scenes=1, scene_seconds=1.4, fps=FPS, width=WIDTH, height=HEIGHT)
    out = {"base": base}
    for name, (abcd, _) in MATRICES.items():
        (root / name).mkdir()
        with_display_matrix(base, root / name / f"{name}.mp4", abcd)
        out[name] = root / name / f"{name}.mp4"
    return out


@pytest.fixture(scope="module")
def coded(files) -> np.ndarray:
    """Every coded frame of the base video (PyAV, native size): the picture before any matrix."""
    decode.clear_reader_cache()
    frames = decode.read_frames(str(files["base"]), list(range(21)), backend="pyav")
    assert frames.shape == (21, HEIGHT, WIDTH, 3)
    return frames


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch) -> str:
    """decord (a local file) or PyAV (what object storage and decord's failures get): with "pyav",
    decord cannot open anything, so every decode falls back as it does for an s3:// source."""
    decode.clear_reader_cache()
    if request.param == "pyav":

        class NoDecord:
            def __init__(self, *args, **kwargs):
                raise RuntimeError("decord disabled for this test")

        monkeypatch.setattr(decode, "_DecordReader", NoDecord)
    yield request.param
    decode.clear_reader_cache()


@pytest.mark.parametrize("name", list(MATRICES))
def test_expected_pictures_are_what_a_player_shows(files, coded, name):
    shown = player_frame(files[name])
    assert psnr(MATRICES[name][1](coded[0]), shown) > 40
    for other, (_, show) in MATRICES.items():  # the picture is asymmetric: any wrong turn is detectable
        wrong = show(coded[0])
        if other != name and wrong.shape == shown.shape:
            assert psnr(wrong, shown) < 25, other


@pytest.mark.parametrize("name", list(MATRICES))
def test_every_backend_decodes_upright_at_any_size(files, coded, backend, name):
    upright = MATRICES[name][1](coded[[0, 7, 20]])
    h, w = upright.shape[1:3]
    full = decode.read_frames(str(files[name]), [0, 7, 20])
    assert {reader.backend for reader in decode._READERS.values()} == {backend}
    assert full.shape == upright.shape
    assert psnr(full, upright) > 45  # same decoder, same pixels: only conversion rounding differs
    small = decode.read_frames(str(files[name]), [0, 7, 20], size=(w // 4, h // 4))
    assert small.shape == (3, h // 4, w // 4, 3)
    assert psnr(small, crop_resize(upright, w // 4, h // 4)) > 30
    plan = decode.FramePlan(str(files[name]), decode.FrameRequest(indices=(0, 7, 20), size=(w // 4, h // 4)))
    planned = decode.read_plan(plan)
    assert planned.shape == small.shape and psnr(planned, small) > 30


def _lam_frames(monkeypatch) -> list[np.ndarray]:
    """Spy on the LAM stage's encoder: the uint8 pairs it was given, in order."""
    from egocurate.actions.lam_stage import LatentActionStage

    seen: list[np.ndarray] = []
    original = LatentActionStage.encode

    def spy(self, pairs):
        seen.append(np.array(pairs))
        return original(self, pairs)

    monkeypatch.setattr(LatentActionStage, "encode", spy)
    return seen


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("name", PIPELINE_CASES)
def test_lam_shard_and_export_see_the_same_upright_picture(
    files, coded, backend, name, tmp_path, monkeypatch
):
    from egocurate.catalog import tables
    from egocurate.catalog.store import Catalog
    from egocurate.export.dreamdojo import export_dreamdojo
    from egocurate.jobs.config import PipelineConfig
    from egocurate.jobs.pipeline import run_pipeline
    from egocurate.shards.write import ShardParams, write_shards

    root = str(tmp_path / "catalog")
    run_pipeline(PipelineConfig(catalog=root, sources=[str(files[name].parent)], progress=False))
    catalog = Catalog(root)
    (video,) = catalog.read("videos").to_pylist()
    upright_w, upright_h = (HEIGHT, WIDTH) if video["rotation"] % 180 else (WIDTH, HEIGHT)
    clip = {"clip_id": f"{name}_clip", "video_id": video["video_id"], "clip_index": 0, "start_frame": 2,
            "end_frame": 18, "fps": FPS, "src_fps": FPS, "num_frames": 16, "duration_s": 16 / FPS,
            "width": upright_w, "height": upright_h}  # fmt: skip
    catalog.append(tables.CLIPS, pa.Table.from_pylist([clip]))

    seen = _lam_frames(monkeypatch)
    lam = {"lam_config": {"model_dim": 32, "enc_blocks": 1, "dec_blocks": 1, "num_heads": 2},
           "height": OUT_H, "width": OUT_W, "device": "cpu", "stride": 1}  # fmt: skip
    stages = [{"name": "latent_actions", "params": lam}]
    run_pipeline(PipelineConfig(catalog=root, stages=stages, progress=False))
    pairs = np.concatenate(seen)
    lam_frames = np.concatenate([pairs[:, 0], pairs[-1:, 1]])
    assert lam_frames.shape == (16, OUT_H, OUT_W, 3)

    params = ShardParams(width=OUT_W, height=OUT_H, crf=10, val_fraction=0.0)
    write_shards(catalog, str(tmp_path / "shards"), params=params, workers=1, progress=False)
    (shard,) = [row for f in sorted((tmp_path / "shards").rglob("*.parquet"))
                for row in pq.read_table(f).to_pylist() if row.get("video")]  # fmt: skip
    assert shard["latent_actions_alignment"] == "exact"
    shard_frames = decode_mp4(shard["video"])
    export_dreamdojo(
        catalog, str(tmp_path / "dd"), width=OUT_W, height=OUT_H, crf=10, workers=1, progress=False
    )
    (mp4,) = list((tmp_path / "dd").rglob("*.mp4"))
    export_frames = decode_mp4(mp4.read_bytes())
    assert shard_frames.shape == export_frames.shape == lam_frames.shape

    upright = crop_resize(MATRICES[name][1](coded[2:18]), OUT_W, OUT_H)
    for label, frames in (("lam", lam_frames), ("shard", shard_frames), ("export", export_frames)):
        assert psnr(frames, upright) >= 30, (label, psnr(frames, upright))
    assert psnr(shard_frames, lam_frames) >= 30 and psnr(export_frames, lam_frames) >= 30


@pytest.mark.parametrize("name", ["rot90", "rot270", "mirror", "transpose"])
def test_the_shot_scanner_sees_the_picture_upright_too(files, coded, name):
    from egocurate.media.scan import VideoScanner

    upright = MATRICES[name][1](coded[0])
    h, w = upright.shape[:2]
    size = (w // 8, h // 8)
    thumbs = [frame for _, frame in VideoScanner(str(files[name]), size=size).scan(skip="none")]
    assert thumbs[0].shape == (h // 8, w // 8, 3)
    assert psnr(thumbs[0], crop_resize(upright[None], *size)[0]) > 25
    sideways = [frame for _, frame in VideoScanner(str(files["base"]), size=size[::-1]).scan(skip="none")]
    if sideways[0].shape == thumbs[0].shape:  # mirror: the same size, a different picture
        assert psnr(thumbs[0], sideways[0]) < 25
