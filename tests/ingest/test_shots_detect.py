"""Shot detectors behind detect_shots: content (ours), fixed windows, TransNetV2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from egocurate.ingest import shot_transnet
from egocurate.ingest.shots import Shot, Transition, detect_shots, detect_transitions, shots_from_transitions
from egocurate.testing.videos import encode_frames, make_video, render_scene

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
FPS = 15.0


@pytest.fixture(scope="module")
def one_take(tmp_path_factory) -> Path:
    """One 4 s scene: a hand moving over a table, camera jitter, no cut."""
    path = tmp_path_factory.mktemp("shots") / "one_take.mp4"
    frames, _, _ = render_scene(np.random.default_rng(3), int(4 * FPS), width=320, height=240)
    encode_frames(frames, path, FPS)
    return path


@pytest.fixture(scope="module")
def two_scenes(tmp_path_factory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("shots") / "two_scenes.mp4"
    truth = make_video(path, seed=11, scenes=2, scene_seconds=3.0, fps=FPS, width=320, height=240)
    return path, truth["cuts"][0]


@pytest.mark.parametrize("decode", ["reference", "all"])
def test_a_video_with_no_cut_is_one_shot(one_take, decode):
    shots = detect_shots(str(one_take), detector="content", decode=decode)
    assert shots == [Shot(0, 60, "start")]


def test_fixed_windows_of_max_length(one_take):
    shots = detect_shots(str(one_take), detector="fixed", window_s=1.5)
    assert [(s.start_frame, s.end_frame) for s in shots] == [(0, 22), (22, 44), (44, 60)]
    assert [s.kind for s in shots] == ["start", "window", "window"]


@pytest.mark.parametrize("decode", ["reference", "all"])
def test_a_synthetic_cut_is_found_within_one_frame(two_scenes, decode):
    path, cut = two_scenes
    transitions, timing = detect_transitions(str(path), detector="content", decode=decode)
    assert timing.num_frames == 90
    assert len(transitions) == 1 and transitions[0].kind == "cut"
    assert abs(transitions[0].start_frame - cut) <= 1
    if decode == "reference":
        assert timing.decoded_frames < timing.num_frames  # the coarse pass decoded less than every frame


def _splice_real(out: Path, a: Path, b: Path, frames_each: int = 45) -> int:
    import av
    import cv2

    frames = []
    for src in (a, b):
        with av.open(str(src)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i >= frames_each:
                    break
                frames.append(
                    cv2.resize(frame.to_ndarray(format="rgb24"), (320, 240), interpolation=cv2.INTER_AREA)
                )
    encode_frames(frames, out, 30.0)
    return frames_each


def test_a_cut_between_real_recordings_is_found_within_one_frame(tmp_path):
    a = SHARED / "facebookresearch__sam2__03_blocks.mp4"
    b = SHARED / "EGO4D__Ego-Exo4D.github.io__cooking_aria.mp4"
    cut = _splice_real(tmp_path / "real.mp4", a, b)
    transitions, _ = detect_transitions(str(tmp_path / "real.mp4"), detector="content")
    cuts = [t for t in transitions if t.is_cut]
    assert len(transitions) == 1 and len(cuts) == 1
    assert abs(cuts[0].start_frame - cut) <= 1


def _real_frames(src: Path, ranges: list[tuple[int, int]]) -> list[np.ndarray]:
    import av
    import cv2

    wanted = {i for a, b in ranges for i in range(a, b)}
    frames = {}
    with av.open(str(src)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                frames[i] = cv2.resize(
                    frame.to_ndarray(format="rgb24"), (320, 240), interpolation=cv2.INTER_AREA
                )
            if i >= max(wanted):
                break
    return [frames[i] for a, b in ranges for i in range(a, b)]


def test_a_jump_cut_within_one_recording_is_found_and_continuous_footage_is_not(tmp_path):
    """A jump forward in one take (as vlog edits do) is a weak cut: same scene, same light."""
    src = SHARED / "EGO4D__Ego-Exo4D.github.io__cooking_aria.mp4"
    encode_frames(_real_frames(src, [(0, 60), (150, 210)]), tmp_path / "jump.mp4", 30.0)
    encode_frames(_real_frames(src, [(0, 120)]), tmp_path / "take.mp4", 30.0)
    jump, _ = detect_transitions(str(tmp_path / "jump.mp4"), detector="content")
    take, _ = detect_transitions(str(tmp_path / "take.mp4"), detector="content")
    assert [t.kind for t in jump] == ["cut"] and abs(jump[0].start_frame - 60) <= 1
    assert take == []


def test_parallel_parts_cover_every_frame_once_and_agree_with_one_thread(tmp_path):
    """The coarse pass cut at keyframes into parts (one per thread) sees what one thread sees."""
    from egocurate.media.scan import VideoScanner

    path = tmp_path / "long.mp4"
    truth = make_video(path, seed=21, scenes=3, scene_seconds=4.0, fps=FPS, width=320, height=240)
    whole = VideoScanner(str(path))
    full = [pts for pts, _ in whole.scan("none")]
    points = whole.split_points(3)
    assert len(points) == 2 and all(p in whole.key_pts for p in points)
    bounds = list(zip([None, *points], [*points, None], strict=True))
    parts = [VideoScanner(str(path)) for _ in bounds]
    seen = [
        pts for scanner, (a, b) in zip(parts, bounds, strict=True) for pts, _ in scanner.scan("none", a, b)
    ]
    assert seen == full  # each frame once, in display order
    assert np.array_equal(VideoScanner.merged(parts).frame_pts, whole.frame_pts)
    one, timing_one = detect_transitions(str(path), detector="content", threads=1)
    three, timing_three = detect_transitions(str(path), detector="content", threads=3)
    assert one == three and [t.start_frame for t in one] == truth["cuts"]
    assert timing_one.num_frames == timing_three.num_frames == truth["num_frames"]


def _dissolve_and_fade(out: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """Three scenes joined by a 12-frame dissolve and a fade through black (ground-truth spans)."""
    rng = np.random.default_rng(5)
    a, _, _ = render_scene(rng, 45, 320, 240)
    b, _, _ = render_scene(rng, 60, 320, 240)
    c, _, _ = render_scene(rng, 45, 320, 240)
    frames = a[:-12]
    for j in range(12):
        w = (j + 1) / 13
        frames.append(((1 - w) * a[-12 + j] + w * b[j]).astype(np.uint8))
    dissolve = (33, 45)
    frames += b[12:-6]
    fade_start = len(frames)
    frames += [(f * (1 - (j + 1) / 6)).astype(np.uint8) for j, f in enumerate(b[-6:])]
    frames += [(f * ((j + 1) / 7)).astype(np.uint8) for j, f in enumerate(c[:6])]
    fade = (fade_start, fade_start + 12)
    frames += c[6:]
    encode_frames(frames, out, FPS)
    return dissolve, fade


def test_gradual_transitions_are_found_and_trimmed(tmp_path):
    dissolve, fade = _dissolve_and_fade(tmp_path / "gradual.mp4")
    transitions, timing = detect_transitions(str(tmp_path / "gradual.mp4"), detector="content")
    kinds = sorted(t.kind for t in transitions)
    assert kinds == ["dissolve", "fade"]
    found = {t.kind: (t.start_frame, t.end_frame) for t in transitions}
    for kind, (s, e) in (("dissolve", dissolve), ("fade", fade)):
        fs, fe = found[kind]
        assert fs <= e and s <= fe  # the spans overlap
    shots = shots_from_transitions(transitions, timing.num_frames)
    assert len(shots) == 3
    assert all(
        not (t.start_frame < s.end_frame and s.start_frame < t.end_frame) for s in shots for t in transitions
    )


def test_shots_and_transitions_convert_both_ways():
    transitions = [Transition(30, 30, "cut"), Transition(50, 62, "dissolve"), Transition(90, 100, "fade")]
    shots = shots_from_transitions(transitions, 120)
    assert shots == [
        Shot(0, 30, "start"),
        Shot(30, 50, "cut"),
        Shot(62, 90, "dissolve"),
        Shot(100, 120, "fade"),
    ]
    assert shots_from_transitions([], 10) == [Shot(0, 10, "start")]
    assert shots_from_transitions([Transition(0, 5, "fade")], 10) == [Shot(5, 10, "fade")]


def test_unknown_detector_names_the_allowed_ones(one_take):
    with pytest.raises(ValueError, match="content, transnet, fixed"):
        detect_shots(str(one_take), detector="magic")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- TransNetV2
def _probe_model():
    """TransNetV2 whose forward is a cheap per-frame function of its input window, so the windowing
    of our streaming `predict` can be compared with the package's `predict_frames` on many lengths."""
    import torch

    base = type(shot_transnet.build_model(F=2, L=3, S=1, D=16))

    class Probe(base):  # type: ignore[misc, valid-type]
        def forward(self, inputs):
            x = inputs.float().mean(dim=(2, 3, 4)) / 64.0 - 2.0  # (batch, frames)
            x = x + 0.01 * torch.arange(x.shape[1], dtype=x.dtype)  # position in the window matters too
            return x[..., None], {"many_hot": x[..., None]}

    return Probe(F=2, L=3, S=1, D=16)


def test_transnet_windows_match_the_reference_inference():
    import torch

    model = _probe_model()
    rng = np.random.default_rng(0)
    for count in (1, 49, 50, 51, 130, 257):
        frames = rng.integers(0, 255, size=(count, 27, 48, 3), dtype=np.uint8)
        ours = shot_transnet.predict(iter(frames), batch_windows=3, model=model)
        with torch.inference_mode():
            ref, _ = model.predict_frames(torch.from_numpy(frames), quiet=True)
        assert ours.shape == (count,)
        assert np.allclose(ours, ref.numpy(), atol=1e-6), count


def test_transnet_runs_the_real_architecture():
    """One 100-frame window through a tiny random-init TransNetV2 (the real layers, small widths)."""
    import torch

    torch.manual_seed(0)
    model = shot_transnet.build_model(F=2, L=3, S=1, D=16)
    frames = np.random.default_rng(1).integers(0, 255, size=(40, 27, 48, 3), dtype=np.uint8)
    probs = shot_transnet.predict(iter(frames), model=model)
    assert probs.shape == (40,) and np.all((probs >= 0) & (probs <= 1)) and probs.std() > 0


def test_transnet_probabilities_to_transitions():
    probs = np.zeros(100, np.float32)
    probs[29] = 0.9  # last frame of the outgoing shot -> the new shot starts at 30
    probs[60:72] = 0.7
    found = shot_transnet.to_transitions(probs)
    assert found[0].start_frame == found[0].end_frame == 30 and found[0].kind == "cut"
    assert (found[1].start_frame, found[1].end_frame, found[1].kind) == (60, 72, "gradual")


def test_building_transnet_leaves_global_state_alone():
    """The package's constructor reseeds numpy/random and forces deterministic torch; ours does not."""
    import random

    import torch

    before = torch.are_deterministic_algorithms_enabled()
    np_state = np.random.get_state()[1].copy()
    py_state = random.getstate()
    shot_transnet.build_model(F=2, L=3, S=1, D=16)
    assert torch.are_deterministic_algorithms_enabled() == before
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert random.getstate() == py_state


@pytest.mark.gpu
def test_transnet_with_released_weights_finds_the_cut_on_gpu(two_scenes):
    import torch

    assert torch.cuda.is_available()
    path, cut = two_scenes
    transitions, _ = detect_transitions(str(path), detector="transnet", device="cuda")
    assert [t.kind for t in transitions] == ["cut"]
    assert abs(transitions[0].start_frame - cut) <= 1
