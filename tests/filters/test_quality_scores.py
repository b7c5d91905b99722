"""Quality scores: black, frozen, blurred and captioned clips score as such; errors quarantine;
the stage runs through the runner, resumes, and the keep expression filters in SQL."""

from __future__ import annotations

from pathlib import Path

import cv2
import duckdb
import numpy as np
import pyarrow as pa
import pytest

from egocurate.catalog import tables
from egocurate.catalog.keep import DEFAULTS, THRESHOLDS, effective_thresholds, keep_predicate
from egocurate.catalog.store import Catalog
from egocurate.filters.quality import QualitySettings, analysis_windows, score_frames
from egocurate.filters.quality_stage import QualityStage
from egocurate.jobs.driver import run_stage
from egocurate.jobs.registry import build_stage
from egocurate.jobs.runners.local import LocalEngine
from egocurate.testing.videos import encode_frames, render_scene

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
W, H, FPS, N = 320, 240, 15.0, 30


def clip_row(path: Path, clip_id: str, frames: int = N, start: int = 0) -> dict:
    return {
        "clip_id": clip_id, "video_id": f"v-{clip_id}", "uri": str(path), "start_frame": start,
        "end_frame": start + frames, "fps": FPS, "width": W, "height": H, "duration_s": frames / FPS,
    }  # fmt: skip


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Five 2 s clips: a normal synthetic scene and its black, frozen, blurred and captioned variants."""
    folder = tmp_path_factory.mktemp("quality")
    frames, _, _ = render_scene(np.random.default_rng(0), N, W, H)
    captioned = [f.copy() for f in frames]
    for f in captioned:
        cv2.rectangle(f, (0, 210), (W, H), (0, 0, 0), -1)
        cv2.putText(f, "subscribe now 12:45 pm", (10, 232), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
    variants = {
        "normal": frames,
        "black": [np.zeros_like(frames[0])] * N,
        "frozen": [frames[0]] * N,
        "blurred": [cv2.GaussianBlur(f, (0, 0), 4) for f in frames],
        "captioned": captioned,
    }
    rows = {}
    for name, video in variants.items():
        path = folder / f"{name}.mp4"
        encode_frames(video, path, FPS)
        rows[name] = clip_row(path, name)
    return rows


@pytest.fixture(scope="module")
def scores(clips: dict[str, dict]) -> dict[str, dict]:
    stage = QualityStage()
    stage.setup()
    out = stage.process(pa.Table.from_pylist(list(clips.values())))
    return {row["clip_id"]: row for row in out.to_pylist()}


def test_normal_clip_moves_and_is_sharp(scores: dict[str, dict]) -> None:
    normal = scores["normal"]
    assert normal["_error_kind"] is None
    assert normal["motion_method"] == "farneback"
    assert normal["motion"] > 2.0  # the synthetic hand and camera jitter move several %/s
    assert normal["static_fraction"] == 0.0
    assert normal["shake"] > 1.0  # the generator's camera jitter is high-frequency
    assert 0.3 < normal["brightness"] < 0.8
    assert normal["blur"] > DEFAULTS["min_blur"]
    assert normal["frames_analysed"] == 10  # 2 s at 5 analysed frames per second
    assert (normal["width"], normal["height"], normal["fps"]) == (W, H, FPS)  # passed through


def test_black_clip_scores_dark_and_static(scores: dict[str, dict]) -> None:
    black = scores["black"]
    assert black["brightness"] < 0.02
    assert black["dark_fraction"] > 0.99
    assert black["static_fraction"] == 1.0
    assert black["motion"] < 0.1


def test_frozen_clip_scores_static_but_not_dark_or_blurry(scores: dict[str, dict]) -> None:
    frozen, normal = scores["frozen"], scores["normal"]
    assert frozen["static_fraction"] == 1.0
    assert frozen["motion"] < 0.1 * normal["motion"]
    assert frozen["frame_diff"] < 0.5
    assert frozen["brightness"] == pytest.approx(normal["brightness"], abs=0.05)
    assert frozen["blur"] > DEFAULTS["min_blur"]


def test_blurred_clip_scores_blurry_but_moving(scores: dict[str, dict]) -> None:
    blurred, normal = scores["blurred"], scores["normal"]
    assert blurred["blur"] < 0.2 * normal["blur"]
    assert blurred["blur"] < DEFAULTS["min_blur"]
    assert blurred["static_fraction"] == 0.0


def test_text_overlay_is_detected_only_with_a_caption(scores: dict[str, dict]) -> None:
    assert scores["captioned"]["text_overlay"] > 0.8
    for name in ("normal", "black", "frozen", "blurred"):
        assert scores[name]["text_overlay"] < 0.2, name


def test_default_keep_thresholds_reject_the_bad_clips(scores: dict[str, dict]) -> None:
    con = duckdb.connect()
    table = pa.Table.from_pylist(
        [{k: v for k, v in row.items() if not k.startswith("_")} for row in scores.values()]
    ).append_column("is_representative", pa.array([True] * len(scores)))
    con.register("clip_view", table)
    kept = {r[0] for r in con.execute(f"SELECT clip_id FROM clip_view WHERE {keep_predicate({})}").fetchall()}
    assert kept == {"normal"}
    relaxed = keep_predicate({"max_text_overlay": None, "min_blur": None})
    kept = {r[0] for r in con.execute(f"SELECT clip_id FROM clip_view WHERE {relaxed}").fetchall()}
    assert kept == {"normal", "captioned", "blurred"}


def test_keep_predicate_names_unknown_thresholds_and_handles_missing_scores() -> None:
    with pytest.raises(ValueError, match="allowed: min_motion"):
        keep_predicate({"min_motoin": 1.0})
    assert "max_shake" not in effective_thresholds({})  # off by default
    assert effective_thresholds({"max_shake": 3.0})["max_shake"] == 3.0
    assert set(DEFAULTS) == set(THRESHOLDS)
    con = duckdb.connect()
    con.register("v", pa.table({"motion": pa.array([None, 0.0], pa.float32()),
                                "is_representative": pa.array([None, False])}))  # fmt: skip
    only = {**{name: None for name in DEFAULTS}, "min_motion": 0.5, "require_representative": 1}
    rows = con.execute(f"SELECT count(*) FROM v WHERE {keep_predicate(only)}").fetchone()
    assert rows == (1,)  # the row without scores passes, the motionless non-representative does not
    assert keep_predicate({k: None for k in DEFAULTS}) == "TRUE"


def test_frame_difference_fallback_when_asked(clips: dict[str, dict]) -> None:
    stage = QualityStage(motion_method="frame_diff")
    out = stage.process(pa.Table.from_pylist([clips["normal"], clips["frozen"]])).to_pylist()
    normal, frozen = out
    assert normal["motion_method"] == frozen["motion_method"] == "frame_diff"
    assert normal["shake"] is None  # needs flow
    assert normal["motion"] > 10 * max(frozen["motion"], 1e-3)
    assert frozen["static_fraction"] == 1.0


def test_bad_rows_are_returned_as_errors(clips: dict[str, dict], tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    rows = [
        clip_row(broken, "broken"),
        clip_row(Path(clips["normal"]["uri"]), "one-frame", frames=1),
        {**clip_row(Path(clips["normal"]["uri"]), "no-uri"), "uri": None},
        clips["normal"],
    ]
    out = {r["clip_id"]: r for r in QualityStage().process(pa.Table.from_pylist(rows)).to_pylist()}
    assert out["broken"]["_error_kind"] == tables.DECODE_ERROR
    assert out["one-frame"]["_error_kind"] == tables.TOO_SHORT
    assert out["no-uri"]["_error_kind"] == tables.ABSURD_METADATA
    assert out["normal"]["_error_kind"] is None


def test_analysis_windows_keep_the_time_step_for_long_clips() -> None:
    windows, stride = analysis_windows(0, 30, 30.0, 5.0, 48, 8)
    assert stride == 6 and windows == [list(range(0, 30, 6))]
    windows, stride = analysis_windows(100, 100 + 30 * 600, 30.0, 5.0, 48, 8)  # a 10-minute clip
    assert stride == 6 and len(windows) == 6
    assert all(len(w) == 8 and np.all(np.diff(w) == 6) for w in windows)
    assert windows[0][0] == 100 and windows[-1][-1] < 100 + 30 * 600


def test_score_frames_on_arrays_is_deterministic() -> None:
    frames = np.stack(render_scene(np.random.default_rng(3), 6, 320, 240)[0])
    a = score_frames([frames], 0.2, QualitySettings())
    b = score_frames([frames], 0.2, QualitySettings())
    assert a == b


def test_stage_runs_through_the_runner_and_a_rerun_does_nothing(
    clips: dict[str, dict], tmp_path: Path
) -> None:
    catalog = Catalog(tmp_path / "catalog")
    stage = build_stage("quality", {"batch_size": 2})
    rows = pa.Table.from_pylist(list(clips.values()))
    first = run_stage(stage, rows, catalog, LocalEngine(), progress=False)
    assert (first.rows_in, first.rows_out, first.quarantined) == (5, 5, 0)
    version = catalog.version("clip_quality")
    second = run_stage(stage, rows, catalog, LocalEngine(), progress=False)
    assert (second.rows_in, second.rows_skipped, second.rows_out) == (0, 5, 0)
    assert catalog.version("clip_quality") == version
    stored = catalog.read("clip_quality").to_pylist()
    assert {r["clip_id"] for r in stored} == set(clips)


def test_invalid_parameters_list_allowed_values() -> None:
    with pytest.raises(ValueError, match="farneback"):
        build_stage("quality", {"motion_method": "lucas-kanade"})


def test_real_clips_rank_egocentric_motion_above_a_static_camera() -> None:
    import decord

    def row(name: str) -> dict:
        path = SHARED_DATA / name
        reader = decord.VideoReader(str(path))
        fps = float(reader.get_avg_fps())
        height, width = reader[0].shape[:2]
        return {"clip_id": name, "video_id": name, "uri": str(path), "start_frame": 0,
                "end_frame": int(3 * fps), "fps": fps, "width": width, "height": height,
                "duration_s": 3.0}  # fmt: skip

    head_mounted = "EGO4D__Ego-Exo4D.github.io__bike_repair_aria.mp4"
    tripod = "EGO4D__Ego-Exo4D.github.io__cooking_cam01.mp4"
    out = {
        r["clip_id"]: r
        for r in QualityStage().process(pa.Table.from_pylist([row(head_mounted), row(tripod)])).to_pylist()
    }
    assert out[head_mounted]["motion"] > 5 * out[tripod]["motion"]
    assert out[head_mounted]["shake"] > 5 * out[tripod]["shake"]
    assert out[tripod]["static_fraction"] < 0.5  # a person moves in front of the fixed camera
    assert out[head_mounted]["text_overlay"] < 0.2 and out[tripod]["text_overlay"] < 0.5


def test_clip_source_uses_upright_sizes_and_the_videos_rotation() -> None:
    from egocurate.media.source import clip_source

    row = {"uri": "/v.mp4", "start_frame": 10, "end_frame": 40, "fps": 30.0, "rotation": 90,
           "video_width": 1920, "video_height": 1080}  # fmt: skip
    source = clip_source(row)
    assert (source.width, source.height, source.rotation, source.num_frames) == (1080, 1920, 90, 30)
    assert clip_source({**row, "width": 1080, "height": 1920}).width == 1080  # clips store upright sizes
    transcoded = clip_source({**row, "clip_uri": "/clips/c.mp4"})
    assert (transcoded.uri, transcoded.start, transcoded.end, transcoded.rotation) == (
        "/clips/c.mp4",
        0,
        30,
        0,
    )
