"""The demo's latent stages end to end: every clip gets a (T−1, 32) latent-action array and a Wan latent."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from egocurate.actions.arrays import unpack_f16
from egocurate.actions.tokenizer_stage import read_latent
from egocurate.catalog import tables
from egocurate.catalog.store import Catalog
from egocurate.jobs.config import PipelineConfig
from egocurate.jobs.pipeline import run_pipeline
from egocurate.testing.videos import make_sample_set

LATENT_STAGES = ("latent_actions", "tokenizer_latents")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def demo_stage_configs() -> list[dict]:
    raw = yaml.safe_load(resources.files("egocurate.configs").joinpath("demo.yaml").read_text())
    stages = [s for s in raw["stages"] if s["name"] in LATENT_STAGES]
    assert [s["name"] for s in stages] == list(LATENT_STAGES)
    return stages


def test_demo_latent_stages_label_every_clip_and_rerun_for_free(tmp_path):
    manifest = make_sample_set(
        tmp_path / "samples", videos=2, scenes=2, scene_seconds=1.0, width=320, height=240
    )
    root = str(tmp_path / "catalog")
    run_pipeline(PipelineConfig(catalog=root, sources=[str(manifest)], progress=False))  # ingest
    catalog = Catalog(root)
    videos = catalog.read("videos").to_pylist()
    assert len(videos) == 2
    clips = []  # one clip per generated scene (the clips stage's job, done by hand here)
    for video in videos:
        truth = json.loads(Path(f"{video['uri']}.truth.json").read_text())
        for k, scene in enumerate(truth["scenes"]):
            clips.append(
                {
                    "clip_id": f"{video['video_id']}_{k}",
                    "video_id": video["video_id"],
                    "clip_index": k,
                    "start_frame": scene["start_frame"],
                    "end_frame": scene["end_frame"],
                    "fps": 15.0,
                    "duration_s": 1.0,
                    "width": 320,
                    "height": 240,
                }
            )
    clips.append(
        {
            "clip_id": "too_short",
            "video_id": videos[0]["video_id"],
            "start_frame": 3,
            "end_frame": 4,
            "fps": 15.0,
        }
    )
    catalog.append(tables.CLIPS, pa.Table.from_pylist(clips))

    config = PipelineConfig(catalog=root, stages=demo_stage_configs(), progress=False)
    first = {s.stage: s for s in run_pipeline(config)}
    assert {k: (s.rows_out, s.quarantined) for k, s in first.items()} == {k: (4, 1) for k in LATENT_STAGES}
    actions = {r["clip_id"]: r for r in catalog.read(tables.CLIP_LATENTS.name).to_pylist()}
    wan = {r["clip_id"]: r for r in catalog.read(tables.CLIP_TOKENIZER_LATENTS.name).to_pylist()}
    kept = {c["clip_id"] for c in clips} - {"too_short"}
    assert set(actions) == set(wan) == kept
    for clip in clips[:-1]:
        row = actions[clip["clip_id"]]
        pairs = len(range(clip["start_frame"], clip["end_frame"], row["lam_stride"])) - 1
        assert unpack_f16(row["latent_actions"], row["latent_actions_shape"]).shape == (pairs, 32)
        assert tuple(read_latent(wan[clip["clip_id"]]).shape) == (1, 16, 2, 6, 8)

    again = {s.stage: s for s in run_pipeline(config)}
    assert {k: (s.rows_in, s.rows_out) for k, s in again.items()} == {k: (0, 0) for k in LATENT_STAGES}
