"""The run summary says what yielded nothing: a video too short for any clip is reported, not dropped."""

from __future__ import annotations

import io

from rich.console import Console

from egocurate.jobs.config import PipelineConfig
from egocurate.jobs.pipeline import run_pipeline
from egocurate.testing.videos import make_video


def test_a_video_too_short_for_any_clip_is_reported(tmp_path, sample_videos):
    short = tmp_path / "short.mp4"
    make_video(short, seed=7, scenes=1, scene_seconds=1.5, fps=10.0, width=320, height=240)
    config = PipelineConfig(
        catalog=str(tmp_path / "cat"),
        sources=[str(short), str(sample_videos[0])],
        stages=[{"name": "ingest"}, {"name": "shots", "params": {"detector": "fixed", "min_clip_s": 2.0}}],
        progress=False,
    )
    out = io.StringIO()
    summaries = run_pipeline(config, Console(file=out, width=200))
    shots = next(s for s in summaries if s.stage == "shots")
    assert shots.rows_in == 2 and shots.rows_out >= 1 and shots.quarantined == 0
    assert shots.no_output == 1
    assert "shots: 1 video(s) shorter than 2 s (after trimming) produced no clip" in out.getvalue()
