"""One reading of clip rows (media.source.clip_source), one way to render one (media.encode.render_clip)."""

from __future__ import annotations

import numpy as np
import pytest

from egocurate.media import decode
from egocurate.media.crop import crop_resize
from egocurate.media.encode import clip_stills, render_clip
from egocurate.media.source import ClipSource, clip_source
from egocurate.testing.videos import make_video

VIDEO = {"uri": "/v.mp4", "rotation": 90, "video_width": 1920, "video_height": 1080}


def test_a_clip_view_row_names_the_upright_video_at_its_own_rate():
    row = {**VIDEO, "clip_id": "c", "start_frame": 30, "end_frame": 90, "fps": 10.0, "src_fps": 30.0,
           "video_fps": 30.0, "num_frames": 20, "width": 240, "height": 320, "clip_uri": None}  # fmt: skip
    source = clip_source(row)
    # the frame range counts the video's frames, at the video's rate (the clip's 10 fps is delivery)
    assert source == ClipSource("/v.mp4", 30, 90, 30.0, 1080, 1920, 90, None)
    assert source.num_frames == 60 and source.shown_size == (1080, 1920)


def test_a_stage_input_row_takes_the_crop_and_the_source_rate():
    row = {**VIDEO, "clip_id": "c", "start_frame": 0, "end_frame": 40, "fps": 15.0, "src_fps": 30.0,
           "width": 640, "height": 480, "crop": [0, 420, 1080, 810]}  # fmt: skip
    source = clip_source(row)
    assert (source.fps, source.size, source.crop) == (30.0, (1080, 1920), (0, 420, 1080, 810))
    assert source.shown_size == (1080, 810)


def test_a_transcoded_clip_is_its_own_upright_file():
    row = {**VIDEO, "clip_id": "c", "start_frame": 30, "end_frame": 90, "fps": 10.0, "num_frames": 20,
           "width": 240, "height": 320, "clip_uri": "/clips/c.mp4", "crop": [0, 0, 240, 320]}  # fmt: skip
    assert clip_source(row) == ClipSource("/clips/c.mp4", 0, 20, 10.0, 240, 320)


def test_rows_without_a_video_size():
    clip = {"clip_id": "c", "uri": "/v.mp4", "start_frame": 0, "end_frame": 10, "fps": 15.0, "width": 320,
            "height": 240, "rotation": 90}  # fmt: skip
    assert clip_source(clip).size == (320, 240)  # a clip's own size is upright already
    episode = {
        "uri": "/v.mp4",
        "start_frame": 0,
        "end_frame": 10,
        "width": 320,
        "height": 240,
        "rotation": 90,
    }
    assert clip_source(episode).size == (240, 320)  # an episode row carries the video's stored size
    assert clip_source({**episode, "duration_s": 2.0}).fps == 5.0  # no rate: frames over seconds
    with pytest.raises(ValueError):
        clip_source({"clip_id": "c", "start_frame": 0, "end_frame": 10})
    with pytest.raises(ValueError):
        clip_source({"clip_id": "c", "uri": "/v.mp4"})


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("render") / "v.mp4"
    make_video(path, seed=5, scenes=1, scene_seconds=1.0, fps=15.0, width=320, height=240)
    return str(path)


def test_render_clip_cuts_the_crop_box_then_fits_the_output(video):
    source = ClipSource(video, 3, 13, 15.0, 320, 240, crop=(100, 40, 160, 120))
    chunks = list(render_clip(source, [0, 2, 4], 80, 60, chunk=2))
    assert [len(c) for c in chunks] == [2, 1]  # memory bounded by the chunk
    frames = np.concatenate(chunks)
    whole = decode.read_frames(video, [3, 5, 7])
    expected = crop_resize(np.ascontiguousarray(whole[:, 40:160, 100:260]), 80, 60)
    assert frames.shape == (3, 60, 80, 3)
    assert np.abs(frames.astype(int) - expected).mean() < 2
    wrong = crop_resize(whole, 80, 60)  # the whole picture is another picture
    assert np.abs(wrong.astype(int) - expected).mean() > 5 * np.abs(frames.astype(int) - expected).mean()


def test_stills_keep_the_clip_shape_at_the_short_side(video):
    stills = clip_stills(ClipSource(video, 0, 15, 15.0, 320, 240), count=3, short_side=120)
    assert stills.shape == (3, 120, 160, 3)
    with pytest.raises(ValueError):
        clip_stills(ClipSource(video, 5, 5, 15.0, 320, 240))
