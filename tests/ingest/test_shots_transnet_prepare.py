"""``detector: transnet`` on Ray: CPU workers decode TransNetV2's 48x27 frames (`prepare`) ahead of
the model actors; the clips must be exactly those of the actor decoding for itself."""

from __future__ import annotations

import pyarrow as pa

from egocurate.ingest.shots_stage import ShotStage
from egocurate.media.decode import frames_of
from egocurate.testing.videos import make_video


def test_prepared_frames_give_the_same_clips_as_decoding_in_process(tmp_path):
    video = tmp_path / "two_scenes.mp4"
    make_video(video, seed=11, scenes=2, scene_seconds=2.5, fps=10.0, width=320, height=240)
    batch = pa.Table.from_pylist([
        {"video_id": "v", "uri": str(video), "fps": 10.0, "width": 320, "height": 240},
        {"video_id": "gone", "uri": str(tmp_path / "gone.mp4"), "fps": 10.0, "width": 320, "height": 240},
    ])  # fmt: skip
    stage = ShotStage(detector="transnet", detector_params={"device": "cpu"}, min_clip_s=1.0)
    assert stage.has_prepare and not ShotStage(detector="content").has_prepare
    prepared = stage.prepare(batch)
    rows = prepared.to_pylist()
    assert frames_of(rows[0]).shape == (50, 27, 48, 3) and frames_of(rows[1]) is None
    direct = stage.process(batch).to_pylist()
    fed = stage.process(prepared).to_pylist()
    assert len([r for r in direct if r["clip_id"]]) == 2  # the cut between the two scenes is found
    assert fed == direct  # same clips, and the missing file is still reported by process
