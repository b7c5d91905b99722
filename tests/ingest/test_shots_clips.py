"""Clip policy, materialization (virtual / transcoded) and the shots stage."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from egocurate.catalog import tables
from egocurate.ingest.clips import ClipPolicy, clip_id_for, config_version, plan_clips
from egocurate.ingest.probe import probe
from egocurate.ingest.shots import Shot, VideoTiming
from egocurate.ingest.shots_stage import ShotStage
from egocurate.media.crop import even_crop_box
from egocurate.media.decode import read_frames
from egocurate.media.tools import ffmpeg_exe
from egocurate.testing.videos import encode_frames, make_video, render_scene


def _timing(n: int, fps: float = 30.0) -> VideoTiming:
    return VideoTiming(n, fps, np.arange(n) / fps)


def _video_row(path: Path, video_id: str = "vid") -> dict:
    return {"video_id": video_id, "uri": str(path), **probe(str(path)).as_row()}


def _run(stage: ShotStage, rows: list[dict]) -> tuple[pa.Table, pa.Table]:
    """The stage's output split as the runner does: good clip rows and quarantine rows."""
    from egocurate.jobs.worker import split_errors

    stage.setup()
    return split_errors(stage, stage.process(pa.Table.from_pylist(rows)))


# ------------------------------------------------------------------------------------------- policy
def test_a_long_shot_is_cut_into_even_windows_of_at_most_max_length():
    timing = _timing(30 * 50)  # one 50 s shot
    clips = plan_clips([Shot(0, 1500, "start")], timing, ClipPolicy(min_s=2.0, max_s=20.0))
    assert [(c.start_frame, c.end_frame) for c in clips] == [(0, 500), (500, 1000), (1000, 1500)]
    assert all(c.duration_s <= 20.0 for c in clips) and [c.kind for c in clips] == ["start", "split", "split"]


def test_boundaries_are_trimmed_and_short_shots_dropped():
    timing = _timing(300)
    shots = [Shot(0, 100, "start"), Shot(100, 130, "cut"), Shot(142, 300, "dissolve")]
    clips = plan_clips(shots, timing, ClipPolicy(min_s=2.0, max_s=20.0, trim_frames=2))
    assert [(c.start_frame, c.end_frame, c.kind) for c in clips] == [(0, 98, "start"), (144, 300, "dissolve")]
    assert clips[1].start_s == pytest.approx(144 / 30) and clips[1].end_s == pytest.approx(10.0)


def test_a_video_shorter_than_the_minimum_gives_no_clip():
    assert plan_clips([Shot(0, 45, "start")], _timing(45), ClipPolicy(min_s=2.0)) == []


def test_clip_ids_are_stable_and_depend_on_the_config():
    v1 = config_version({"detector": "content", "min_s": 2.0})
    v2 = config_version({"detector": "content", "min_s": 3.0})
    assert v1 == config_version({"min_s": 2.0, "detector": "content"}) and v1 != v2
    assert clip_id_for("abc", 0, 100, v1) == clip_id_for("abc", 0, 100, v1)
    assert (
        len({clip_id_for("abc", 0, 100, v1), clip_id_for("abc", 0, 101, v1), clip_id_for("abc", 0, 100, v2)})
        == 3
    )


def test_centre_crop_to_4_3():
    assert even_crop_box(1280, 720, 4 / 3) == (160, 0, 960, 720)
    assert even_crop_box(360, 640, 4 / 3) == (0, 185, 360, 270)
    assert even_crop_box(640, 480, 4 / 3) == (0, 0, 640, 480)


# -------------------------------------------------------------------------------------------- stage
@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("clips") / "sample.mp4"
    truth = make_video(path, seed=4, scenes=3, scene_seconds=3.0, fps=15.0, width=320, height=240)
    return path, truth


def test_stage_turns_a_video_into_clip_rows(sample):
    path, truth = sample
    good, bad = _run(ShotStage(min_clip_s=2.0), [_video_row(path)])
    assert bad.num_rows == 0 and good.num_rows == 3
    rows = good.to_pylist()
    cuts = truth["cuts"]
    assert [r["boundary_kind"] for r in rows] == ["start", "cut", "cut"]
    for row, cut in zip(rows[1:], cuts, strict=True):
        assert abs(row["start_frame"] - (cut + 1)) <= 1  # one frame trimmed after the cut
    assert all(r["end_frame"] <= c for r, c in zip(rows, cuts, strict=False))  # no clip straddles a cut
    assert rows[0]["start_s"] == 0.0 and rows[0]["fps"] == 15.0 and rows[0]["clip_uri"] is None
    assert rows[0]["num_frames"] == rows[0]["end_frame"] - rows[0]["start_frame"]
    assert len({r["clip_id"] for r in rows}) == 3
    assert set(good.column_names) >= set(tables.CLIPS.columns)


def test_a_video_shorter_than_the_minimum_gives_no_clip_and_no_error(tmp_path):
    frames, _, _ = render_scene(np.random.default_rng(1), 15, 320, 240)  # 1 s at 15 fps
    path = tmp_path / "short.mp4"
    encode_frames(frames, path, 15.0)
    good, bad = _run(ShotStage(min_clip_s=2.0), [_video_row(path)])
    assert good.num_rows == 0 and bad.num_rows == 0


def test_an_undecodable_video_is_quarantined_and_the_batch_goes_on(sample, tmp_path):
    path, _ = sample
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 2048)
    rows = [_video_row(path, "good"), {**_video_row(path, "bad"), "uri": str(broken)}]
    good, bad = _run(ShotStage(), rows)
    assert set(good.column("video_id").to_pylist()) == {"good"}
    assert bad.column("key").to_pylist() == ["bad"] and bad.column("error_kind").to_pylist() == [
        "decode_error"
    ]


def test_transcoded_clips_are_frame_accurate_h264(sample, tmp_path):
    path, _ = sample
    stage = ShotStage(materialize="transcode", clip_dir=str(tmp_path / "clips"), encoder="libx264")
    good, bad = _run(stage, [_video_row(path)])
    assert bad.num_rows == 0 and good.num_rows == 3
    import av

    for row in good.to_pylist():
        clip = row["clip_uri"]
        assert Path(clip).exists() and row["encoder"] == "libx264"
        with av.open(clip) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            decoded = list(container.decode(stream))
        assert len(decoded) == row["num_frames"] == row["end_frame"] - row["start_frame"]
        assert decoded[0].key_frame
        # the first and last frames are the source's start and end-1 frames (re-encoded: small error)
        src = read_frames(str(path), [row["start_frame"], row["end_frame"] - 1]).astype(np.int16)
        ours = np.stack([decoded[0].to_ndarray(format="rgb24"), decoded[-1].to_ndarray(format="rgb24")])
        assert np.abs(ours.astype(np.int16) - src).mean() < 4
        neighbours = read_frames(str(path), [row["start_frame"] + 1]).astype(np.int16)
        assert (
            np.abs(ours[0].astype(np.int16) - neighbours[0]).mean()
            > np.abs(ours[0].astype(np.int16) - src[0]).mean()
        )
    with open(good.to_pylist()[0]["clip_uri"], "rb") as fh:
        data = fh.read()
    assert data.find(b"moov") < data.find(b"mdat")


def test_crop_resize_and_target_fps_are_applied_when_transcoding(sample, tmp_path):
    path, _ = sample
    stage = ShotStage(
        materialize="transcode",
        clip_dir=str(tmp_path / "c"),
        crop_4_3=True,
        width=64,
        height=48,
        fps=5.0,
        encoder="libx264",
    )
    good, _ = _run(stage, [_video_row(path)])
    import av

    row = good.to_pylist()[0]
    with av.open(row["clip_uri"]) as container:
        stream = container.streams.video[0]
        n = sum(1 for _ in container.decode(stream))
        assert (stream.codec_context.width, stream.codec_context.height) == (64, 48)
    assert (row["width"], row["height"], row["fps"]) == (64, 48, 5.0)
    assert n == row["num_frames"] == len(range(row["start_frame"], row["end_frame"], 3))


# ------------------------------------------------------------------------------- VFR and rotation
def _vfr_video(path: Path) -> None:
    """Scene A: 30 frames 1/15 s apart (0-1.93 s); scene B: 60 frames 1/30 s apart from 2.0 s."""
    rng = np.random.default_rng(0)
    a, _, _ = render_scene(rng, 30, 320, 240)
    b, _, _ = render_scene(rng, 60, 320, 240)
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "320x240", "-r", "30", "-i", "-",
        "-vf", "setpts='if(lt(N,30),2*N,N+30)/(30*TB)'", "-fps_mode", "passthrough",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-video_track_timescale", "30", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, input=b"".join(f.tobytes() for f in a + b), check=True)


def test_variable_frame_rate_keeps_real_timestamps(tmp_path):
    path = tmp_path / "vfr.mp4"
    _vfr_video(path)
    row = _video_row(path)
    assert row["is_vfr"]
    good, bad = _run(ShotStage(min_clip_s=1.5), [row])
    assert bad.num_rows == 0
    clips = good.sort_by("start_frame").to_pylist()
    assert [c["boundary_kind"] for c in clips] == ["start", "cut"]
    assert abs(clips[1]["start_frame"] - 31) <= 1
    # times come from the frames' timestamps, not from index / average fps (22.1)
    assert clips[1]["start_s"] == pytest.approx((clips[1]["start_frame"] + 30) / 30.0, abs=1e-3)
    assert clips[0]["end_s"] == pytest.approx(2 * clips[0]["end_frame"] / 30.0, abs=1e-3)
    assert clips[1]["end_s"] == pytest.approx(4.0, abs=1e-3)
    assert clips[1]["duration_s"] == pytest.approx(clips[1]["end_s"] - clips[1]["start_s"])


def test_rotated_input_keeps_timestamps_and_gets_upright_sizes(sample, tmp_path):
    path, _ = sample
    rotated = tmp_path / "rotated.mp4"
    base = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    if subprocess.run(
        base + ["-display_rotation", "90", "-i", str(path), "-c", "copy", str(rotated)]
    ).returncode:
        subprocess.run(
            base + ["-i", str(path), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated)], check=True
        )
    plain_row, rotated_row = _video_row(path), _video_row(rotated)
    assert rotated_row["rotation"] in (90, 270)
    plain, _ = _run(ShotStage(), [plain_row])
    turned, bad = _run(ShotStage(), [rotated_row])
    assert bad.num_rows == 0
    keys = ("start_frame", "end_frame", "start_s", "end_s", "duration_s", "num_frames")
    assert [{k: r[k] for k in keys} for r in turned.to_pylist()] == [
        {k: r[k] for k in keys} for r in plain.to_pylist()
    ]
    assert {(r["width"], r["height"]) for r in turned.to_pylist()} == {(240, 320)}
    transcoded, _ = _run(
        ShotStage(materialize="transcode", clip_dir=str(tmp_path / "rc"), encoder="libx264"), [rotated_row]
    )
    import av

    with av.open(transcoded.to_pylist()[0]["clip_uri"]) as container:
        cc = container.streams.video[0].codec_context
        assert (cc.width, cc.height) == (240, 320)  # upright pixels, no rotation flag left to honour


def test_pipeline_writes_clips_and_a_rerun_does_no_new_work(tmp_path):
    from egocurate.catalog.store import Catalog
    from egocurate.jobs.config import PipelineConfig, StageConfig
    from egocurate.jobs.pipeline import run_pipeline
    from egocurate.testing.videos import make_sample_set

    manifest = make_sample_set(tmp_path / "samples", videos=2, scene_seconds=3.0, width=320, height=240)
    config = PipelineConfig(
        catalog=str(tmp_path / "catalog"), engine="local", sources=[str(manifest)], progress=False,
        stages=[StageConfig(name="ingest"), StageConfig(name="shots", params={"min_clip_s": 2.0})],
    )  # fmt: skip
    first = run_pipeline(config)[1]
    clips = Catalog(config.catalog).read("clips")
    assert first.rows_in == 2 and first.rows_out == clips.num_rows == 6
    assert sorted(set(clips.column("boundary_kind").to_pylist())) == ["cut", "start"]
    second = run_pipeline(config)[1]
    assert second.rows_skipped == 2 and second.rows_out == 0
    assert Catalog(config.catalog).read("clips").num_rows == 6


def test_cli_prints_shots_and_clips_of_one_video(sample):
    import json

    from typer.testing import CliRunner

    from egocurate.cli.main import app

    path, truth = sample
    result = CliRunner().invoke(app, ["shots", "detect", str(path), "--min-clip-s", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [t["start"] for t in report["transitions"]] == truth["cuts"]
    assert len(report["shots"]) == 3 and len(report["clips"]) == 3
    bad = CliRunner().invoke(app, ["shots", "detect", str(path), "--detector", "magic"])
    words = " ".join(bad.output.replace("│", " ").split())  # Typer's error panel wraps at the width
    assert bad.exit_code != 0 and "allowed: content, transnet, cascade, fixed" in words


@pytest.mark.gpu
def test_nvenc_transcoding_on_a_gpu_machine(sample, tmp_path):
    """h264_nvenc when ffmpeg has it and a GPU is visible; `auto` records what it really used."""
    from egocurate.ingest.clips import nvenc_available

    path, _ = sample
    encoder = "h264_nvenc" if nvenc_available() else "auto"
    good, bad = _run(
        ShotStage(materialize="transcode", clip_dir=str(tmp_path / "nv"), encoder=encoder), [_video_row(path)]
    )
    assert bad.num_rows == 0 and good.num_rows == 3
    import av

    for row in good.to_pylist():
        assert row["encoder"] == ("h264_nvenc" if nvenc_available() else "libx264")
        with av.open(row["clip_uri"]) as container:
            assert sum(1 for _ in container.decode(video=0)) == row["num_frames"]
