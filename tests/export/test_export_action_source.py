"""The LeRobot export's `action` from recorded, IDM or latent actions, chosen by a preference order
and recorded in meta/info.json and per episode."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from egocurate.cli.main import app
from egocurate.export.actions import parse_action_source
from egocurate.testing.catalog import build_sample_catalog
from egocurate.testing.lerobot import add_action_sources


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("actions")
    catalog = build_sample_catalog(root, videos=3, seconds=2.0, fps=15.0, clip_frames=20, clip_step=10,
                                   tokenizer_latents=False)  # fmt: skip
    return catalog, add_action_sources(catalog)


def _episodes(out):
    meta = out / "meta"
    info = json.loads((meta / "info.json").read_text())
    jsonl = [json.loads(line) for line in (meta / "episodes.jsonl").read_text().splitlines()]
    sidecar = pq.read_table(meta / "egocurate_episodes.parquet").to_pylist()
    return info, jsonl, sidecar


def test_real_for_real_episodes_idm_for_generated_ones_and_the_rest_counted(sample, tmp_path):
    catalog, truth = sample
    out = tmp_path / "ds"
    result = CliRunner().invoke(app, ["export", "lerobot", "--catalog", catalog.root, "--out", str(out),
                                      "--fps", "15", "--width", "64", "--height", "48", "--no-progress",
                                      "--action-source", "real,idm,latent"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "left out 2 clip(s)" in result.output  # video 2 has only 32-d latents: not this dataset's size
    info, jsonl, sidecar = _episodes(out)
    provenance = info["egocurate_action"]
    assert provenance["kind"] == "mixed" and provenance["preference"] == ["real", "idm", "latent"]
    assert provenance["episodes_by_source"] == {"real": 2, "idm": 2}
    assert provenance["idm_models"] == {"idm-tiny": {"checkpoint_hash": "deadbeef", "episodes": 2}}
    assert provenance["real_formats"] == {"lerobot_v2.1": 2}
    assert provenance["episodes_left_out_without_action"] == 2
    assert (
        info["features"]["action"]["shape"] == [3] and info["features"]["action"]["names"] == truth["names"]
    )
    marker = json.loads((out / "meta" / "egocurate_export.json").read_text())
    assert marker["action"] == provenance and len(marker["skipped"]) == 2
    assert all(
        "no action from real, idm, latent in the dataset's robot action space of size 3" in r
        for r in marker["skipped"].values()
    )

    for episode, listed, side in zip(range(len(jsonl)), jsonl, sidecar, strict=True):
        assert listed["action_source"] == side["action_source"]
        data = pq.read_table(out / info["data_path"].format(episode_chunk=0, episode_index=episode))
        action = np.asarray(data.column("action").to_pylist(), dtype=np.float32)
        start, end = side["start_frame"], side["end_frame"]
        if side["video_id"] == truth["real_video"]:
            assert side["action_source"] == "real" and side["origin"] == "real"
            assert np.array_equal(action, truth["real"][start:end])  # sliced to the clip's frames
        else:
            assert side["video_id"] == truth["generated_video"] and side["origin"] == "generated"
            assert side["action_source"] == "idm" and side["action_checkpoint_hash"] == "deadbeef"
            idm = truth["idm"][side["clip_id"]].astype(np.float32)
            assert np.array_equal(action[:-1], idm) and np.array_equal(action[-1], idm[-1])  # last held


def test_latent_preference_and_default(sample, tmp_path):
    from egocurate.export.lerobot import export_lerobot

    catalog, _ = sample
    out = tmp_path / "latent"
    report = export_lerobot(catalog, str(out), fps=15, width=64, height=48, progress=False,
                            action_source="latent,real", origin="real")  # fmt: skip
    info, jsonl, _ = _episodes(out)
    assert report.written == 4 and not report.skipped  # the two generated clips are not selected
    assert info["egocurate_action"]["kind"] == "latent_actions" and info["features"]["action"]["shape"] == [
        32
    ]
    assert {e["action_source"] for e in jsonl} == {"latent"}
    assert parse_action_source(None) == ("latent", "zeros")  # the default: the export as it always was
    with pytest.raises(ValueError, match="comma-separated order of real, idm, latent, zeros"):
        parse_action_source("real,telepathy")


def test_recorded_and_latent_actions_never_share_a_dataset_even_at_one_size():
    from egocurate.export.actions import ActionRows, plan_actions

    rows = ActionRows(
        real={
            "v0": {"actions": b"x", "actions_shape": [10, 32], "action_names": [f"j{i}" for i in range(32)]}
        },
        latent={"c0": {"latent_actions": b"x"}, "c1": {"latent_actions": b"x"}},
    )
    view = [{"clip_id": "c0", "video_id": "v0"}, {"clip_id": "c1", "video_id": "v1"}]
    plan = plan_actions(view, rows, ("real", "latent"))
    assert plan.chosen == {"c0": "real"} and plan.dim == 32 and plan.names[0] == "j0"
    assert "robot action space of size 32 (has: latent (32-d))" in plan.left_out["c1"]
    plan = plan_actions(view, rows, ("real", "zeros"))
    assert plan.chosen == {"c0": "real", "c1": "zeros"} and not plan.left_out
