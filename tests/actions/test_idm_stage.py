"""`egocurate idm train` and `idm label` on a tiny robot catalog; the `idm_actions` stage's rows, errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from egocurate.actions.arrays import unpack_f16
from egocurate.actions.idm import ActionDimError, IDMConfig, InverseDynamicsModel
from egocurate.actions.idm_stage import ACTION_DIM_MISMATCH, IDMActionStage
from egocurate.catalog import tables
from egocurate.cli.main import app, user_error
from egocurate.jobs.inputs import idm_inputs
from egocurate.testing.robot_videos import ACTION_NAMES, write_robot_catalog

CONFIG = """
name: idm-tiny
idm: {horizon: 2, height: 32, width: 32, widths: [8, 16], hidden: 32}
binary_actions: [gripper]
batch_size: 8
max_steps: 6
device: cpu
"""


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def robot(tmp_path_factory) -> dict:
    """3 episodes of 12 frames cut into 6-frame clips; the third has no real actions. Plus a clip whose
    video is missing and a 2-frame clip (too short for horizon 2), both without real actions."""
    root = tmp_path_factory.mktemp("robot")
    catalog, episodes = write_robot_catalog(
        root, [11, 12, 13], num_frames=12, size=64, clip_frames=6, with_actions=[True, True, False]
    )
    unlabelled = episodes[2]
    catalog.append(tables.VIDEOS, pa.Table.from_pylist(
        [{"video_id": "gone", "uri": str(root / "gone.mp4"), "fps": 10.0, "width": 64, "height": 64}]
    ))  # fmt: skip
    catalog.append(tables.CLIPS, pa.Table.from_pylist([
        {"clip_id": "gone_0", "video_id": "gone", "start_frame": 0, "end_frame": 6},
        {"clip_id": "short_0", "video_id": unlabelled["video_id"], "start_frame": 0, "end_frame": 2},
    ]))  # fmt: skip
    (root / "idm.yaml").write_text(CONFIG)
    return {"root": root, "catalog": catalog, "episodes": episodes}


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=True)


def test_idm_train_then_label_clips_without_real_actions_then_all(robot):
    root, catalog, episodes = robot["root"], robot["catalog"], robot["episodes"]
    out = root / "ckpt"
    done = _invoke(
        "idm", "train", "--catalog", catalog.root, "--config", str(root / "idm.yaml"), "--out", str(out)
    )
    assert done.exit_code == 0, done.output
    weights = out / "idm-tiny.safetensors"
    config = json.loads((out / "idm-tiny.json").read_text())
    assert weights.is_file() and config["action_names"] == list(ACTION_NAMES) and config["binary_dims"] == [2]
    truth = np.concatenate([e["episode"].actions for e in episodes[:2]])
    assert np.allclose(config["action_mean"][:2], truth[:, :2].mean(0), atol=1e-4)  # statistics of the data

    done = _invoke("idm", "label", "--catalog", catalog.root, "--checkpoint", str(weights), "--device", "cpu")
    assert done.exit_code == 0, done.output
    rows = {r["clip_id"]: r for r in catalog.read("clip_idm_actions").to_pylist()}
    assert set(rows) == set(episodes[2]["clip_ids"])  # only the episode without real actions
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    for row in rows.values():
        assert row["actions_shape"] == [5, 3] and row["horizon"] == 2 and row["checkpoint_hash"] == digest
        assert row["idm_model_id"] == "idm-tiny" and row["real_action_mae"] is None
        assert set(unpack_f16(row["actions"], row["actions_shape"])[:, 2].tolist()) <= {0.0, 1.0}
    quarantined = {r["key"]: r["error_kind"] for r in catalog.read("quarantine").to_pylist()
                   if r["stage"] == "idm_actions"}  # fmt: skip
    assert quarantined == {"gone_0": tables.NOT_FOUND, "short_0": tables.TOO_SHORT}

    done = _invoke(
        "idm", "label", "--catalog", catalog.root, "--checkpoint", str(weights), "--device", "cpu", "--all"
    )
    assert done.exit_code == 0, done.output
    rows = {r["clip_id"]: r for r in catalog.read("clip_idm_actions").to_pylist()}
    assert set(rows) == {c for e in episodes for c in e["clip_ids"]}
    for k, clip_id in enumerate(episodes[0]["clip_ids"]):
        row = rows[clip_id]
        real = episodes[0]["episode"].actions[6 * k : 6 * k + 5]
        diff = unpack_f16(row["actions"], row["actions_shape"]) - real
        assert row["real_action_mae"] == pytest.approx(np.abs(diff).mean(), rel=1e-4)
        assert row["real_action_rmse"] == pytest.approx(np.sqrt((diff**2).mean()), rel=1e-4)


def test_a_checkpoint_with_the_wrong_action_dim_is_refused(robot, tmp_path):
    four = IDMConfig(action_names=("a", "b", "c", "d"), horizon=2, height=32, width=32, widths=(8,), hidden=8)
    path = InverseDynamicsModel(four).save(tmp_path / "four")
    done = _invoke(
        "idm", "label", "--catalog", robot["catalog"].root, "--checkpoint", str(path), "--device", "cpu"
    )
    assert isinstance(done.exception, ActionDimError)
    message = user_error(done.exception)  # what `egocurate` prints before exiting 2
    assert message and "\n" not in message and "4 action dims" in message and "[3]" in message

    # the stage itself, per clip: a clip with 3-dim real actions is quarantined, not mislabelled
    stage = IDMActionStage(checkpoint=str(path), all=True, device="cpu")
    inputs = stage.select_inputs(idm_inputs(robot["catalog"]))
    labelled = inputs.filter(pa.compute.is_valid(inputs.column("real_actions"))).slice(0, 1)
    out = stage.process(labelled).to_pylist()
    assert out[0][tables.ERROR_KIND] == ACTION_DIM_MISMATCH and "3" in out[0][tables.ERROR_MESSAGE]
