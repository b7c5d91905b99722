"""Issue 16 end to end, through the console commands: a LeRobot dataset (real actions) and a manifest
of generated rollouts go into one catalog; an IDM trained from the catalog labels the rollouts; the
LeRobot export then writes recorded actions for the real episodes and IDM actions for the generated
ones, and says which is which. Tiny configs, nothing downloaded."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from egocurate.catalog.store import Catalog
from egocurate.cli.main import app
from egocurate.testing.lerobot import write_lerobot_dataset
from egocurate.testing.videos import make_video

CONFIG = """
name: idm-e2e
idm: {horizon: 2, height: 32, width: 32, widths: [8], hidden: 16}
batch_size: 8
max_steps: 4
device: cpu
"""


def _ok(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_real_and_generated_episodes_export_with_their_own_action_source(tmp_path):
    truth = write_lerobot_dataset(tmp_path / "robot", episodes=2, frames=20, fps=10, cameras=("top",))
    make_video(tmp_path / "rollout.mp4", seed=5, scenes=1, scene_seconds=2.0, fps=10.0, width=320, height=240)
    manifest = tmp_path / "rollouts.jsonl"
    record = {"uri": "rollout.mp4", "prompt": "pick the cube", "generator": "world-model@test"}
    manifest.write_text(json.dumps(record) + "\n")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        f"catalog: {tmp_path / 'cat'}\nsources: [{tmp_path / 'robot'}, {manifest}]\nprogress: false\n"
        "stages:\n  - {name: ingest}\n"
        "  - {name: shots, params: {detector: fixed, min_clip_s: 1.0, max_clip_s: 20.0}}\n"
    )
    (tmp_path / "idm.yaml").write_text(CONFIG)
    catalog = str(tmp_path / "cat")

    _ok("run", str(pipeline))
    _ok("idm", "train", "--catalog", catalog, "--config", str(tmp_path / "idm.yaml"),
        "--out", str(tmp_path / "w"))  # fmt: skip
    _ok("idm", "label", "--catalog", catalog, "--checkpoint", str(tmp_path / "w" / "idm-e2e.safetensors"),
        "--device", "cpu")  # fmt: skip

    cat = Catalog(catalog, create=False)
    videos = {r["video_id"]: r for r in cat.read("videos").to_pylist()}
    generated = {v for v, r in videos.items() if r["origin"] == "generated"}
    assert len(videos) == 3 and len(generated) == 1
    labelled = {r["video_id"] for r in cat.read("clip_idm_actions").to_pylist()}
    assert labelled == generated  # the IDM labels only clips without real actions

    selected = tmp_path / "generated.jsonl"
    _ok("query", "--catalog", catalog, "--origin", "generated", "--out", str(selected))
    rows = [json.loads(line) for line in selected.read_text().splitlines()]
    assert rows and {r["video_id"] for r in rows} == generated

    out = tmp_path / "export"
    _ok("export", "lerobot", "--catalog", catalog, "--out", str(out), "--action-source", "real,idm")
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["egocurate_action"]["episodes_by_source"] == {"real": 2, "idm": 1}
    digest = hashlib.sha256((tmp_path / "w" / "idm-e2e.safetensors").read_bytes()).hexdigest()
    assert info["egocurate_action"]["idm_models"] == {"idm-e2e": {"checkpoint_hash": digest, "episodes": 1}}
    episodes = pq.read_table(out / "meta" / "egocurate_episodes.parquet").to_pylist()
    by_origin = {(e["origin"], e["action_source"]) for e in episodes}
    assert by_origin == {("real", "real"), ("generated", "idm")}
    assert info["features"]["action"]["shape"] == [truth["actions"][0].shape[1]]
