"""Planned frames (media.decode.read_plan / decode_plans): a consumer gets the same bytes whether its
plan is decoded alone or together with other consumers' plans of the same clip."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from egocurate.media import decode
from egocurate.media.tools import ffmpeg_exe
from egocurate.testing.videos import make_video

FPS = 15.0


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("planned") / "wide.mp4"
    make_video(path, seed=4, scenes=1, scene_seconds=2.0, fps=FPS, width=640, height=360)
    return str(path)


def _rotated_copy(src: str, dst: str, ccw: int) -> None:
    """`src` with a display rotation of `ccw` degrees (ffmpeg >= 6 flag, else the legacy tag)."""
    base = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    new = subprocess.run(base + ["-display_rotation", str(ccw), "-i", src, "-c", "copy", dst])
    if new.returncode != 0:
        subprocess.run(base + ["-i", src, "-c", "copy", "-metadata:s:v:0", f"rotate={ccw}", dst], check=True)


def _plans(uri: str) -> dict[str, decode.FramePlan]:
    """Consumers as the stages ask: few frames small, many frames larger, some at native size."""

    def plan(indices, size):
        return decode.FramePlan(uri, decode.FrameRequest(indices=tuple(indices), size=size))

    return {
        "quality": plan(range(0, 30, 3), (256, 144)),
        "embed": plan((3, 11, 18, 26), (398, 224)),
        "lam": plan(range(4, 30, 2), (428, 242)),
        "native": plan((0, 29), None),
        "odd": plan((5, 9), (113, 65)),
    }


def test_shared_decode_gives_each_consumer_its_frames_alone(video):
    plans = _plans(video)
    shared = decode.decode_plans(plans)
    for name, plan in plans.items():
        decode.clear_reader_cache()  # a fresh reader: nothing of the shared decode carries over
        alone = decode.read_plan(plan)
        size = plan.request.size or (640, 360)
        assert shared[name].shape == (len(plan.request.indices), size[1], size[0], 3)
        assert np.array_equal(shared[name], alone), name


def test_planned_frames_do_not_depend_on_what_was_read_before(video):
    plan = _plans(video)["lam"]
    first = decode.read_plan(plan)
    decode.read_plan(_plans(video)["native"])  # the cached reader moves elsewhere in the file
    decode.read_frames(video, [29, 0], (320, 180))
    assert np.array_equal(decode.read_plan(plan), first)
    chunks = [decode.read_plan(decode.FramePlan(video, decode.FrameRequest(indices=c, size=(428, 242))))
              for c in (plan.request.indices[:5], plan.request.indices[4:])]  # fmt: skip
    assert np.array_equal(np.concatenate([chunks[0], chunks[1][1:]]), first)


def test_rotated_plans_are_upright_and_match_alone(video, tmp_path):
    rotated = str(tmp_path / "rotated.mp4")
    _rotated_copy(video, rotated, 90)
    wants = {"quality": (tuple(range(0, 30, 3)), (144, 256)), "embed": ((3, 18), (224, 398))}  # upright
    plans = {
        name: decode.FramePlan(rotated, decode.FrameRequest(indices=indices, size=size))
        for name, (indices, size) in wants.items()
    }
    shared = decode.decode_plans(plans)
    for name, plan in plans.items():
        decode.clear_reader_cache()
        alone = decode.read_plan(plan)
        assert alone.shape[1:3] == (plan.request.size[1], plan.request.size[0])
        assert np.array_equal(shared[name], alone), name


def test_a_failed_shared_decode_falls_back_to_each_consumer_alone(video, monkeypatch):
    plans = _plans(video)
    expected = {
        name: decode.read_frames(video, list(plan.request.indices), plan.request.size)
        for name, plan in plans.items()
    }

    def broken(*args, **kwargs):
        raise decode.DecodeError("pyav cannot read this file")

    monkeypatch.setattr(decode, "_get_sized", broken)
    shared = decode.decode_plans(plans)
    for name, plan in plans.items():
        assert np.array_equal(shared[name], expected[name]), name
        assert np.array_equal(decode.read_plan(plan), expected[name]), name
