"""The inverse dynamics model: it learns a simple action, checkpoints round-trip, a bad one is refused."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from egocurate.actions.idm import (
    ActionDimError,
    IDMConfig,
    InverseDynamicsModel,
    checkpoint_hash,
    chunk_starts,
    load_idm,
    stitch_chunks,
)
from egocurate.actions.idm_train import EpisodePairs, IDMTrainConfig, train_idm
from egocurate.cli.main import user_error
from egocurate.testing.robot_videos import ACTION_NAMES

TINY = {"horizon": 1, "height": 32, "width": 32, "widths": [8, 16], "hidden": 32}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _squares(count: int, seed: int, size: int = 32) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two-frame episodes: a square moves by the action (dx, dy) px and turns red when "closed"."""
    rng = np.random.default_rng(seed)
    frames, actions = [], []
    for _ in range(count):
        dx, dy = rng.integers(-3, 4, size=2)
        closed = int(rng.integers(0, 2))
        x, y = rng.integers(4, size - 10, size=2)
        pair = np.zeros((2, size, size, 3), np.uint8)
        pair[:] = rng.integers(0, 40, size=(size, size, 3), dtype=np.uint8)
        pair[0, y : y + 5, x : x + 5] = (0, 220, 0)
        pair[1, y + dy : y + dy + 5, x + dx : x + dx + 5] = (220, 0, 0) if closed else (0, 220, 0)
        frames.append(pair)
        actions.append(np.array([[dx, dy, closed], [0, 0, closed]], np.float32))
    return frames, actions


def _r2(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    return 1 - ((pred - true) ** 2).sum(0) / ((true - true.mean(0)) ** 2).sum(0)


def test_idm_learns_a_simple_action(tmp_path):
    """A tiny IDM trained for a few hundred steps reads the move and the colour; its random init cannot."""
    frames, actions = _squares(256, seed=0)
    test_frames, test_actions = _squares(64, seed=1)
    pairs = torch.from_numpy(np.stack(test_frames)).float() / 255
    truth = np.stack([a[0] for a in test_actions])
    config = IDMTrainConfig(
        idm=TINY, binary_actions=["gripper"], batch_size=32, lr=3e-3, warmup_steps=20, max_steps=200,
        out_dir=str(tmp_path), name="tiny", device="cpu", log_every=50,
    )  # fmt: skip
    rows = [{"action_names": list(ACTION_NAMES)}]
    torch.manual_seed(0)
    untrained = InverseDynamicsModel(
        IDMConfig.from_dict({**TINY, "action_names": ACTION_NAMES, "binary_dims": (2,)})
    ).eval()
    model, result = train_idm(rows, config, progress=False, data=EpisodePairs.from_arrays(frames, actions, 1))
    assert result.steps == 200 and result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.checkpoint and load_idm(result.checkpoint).config.action_names == ACTION_NAMES
    pred = model.predict(pairs)[:, 0].numpy()
    r2 = _r2(pred[:, :2], truth[:, :2])
    assert (r2 > 0.8).all(), r2
    assert (pred[:, 2] == truth[:, 2]).mean() >= 0.9
    baseline = _r2(untrained.predict(pairs)[:, 0, :2].numpy(), truth[:, :2])
    assert (baseline < 0.2).all(), baseline


def test_checkpoint_round_trip_and_wrong_action_dim(tmp_path):
    config = IDMConfig.from_dict(
        {**TINY, "horizon": 2, "action_names": ACTION_NAMES, "binary_dims": (2,), "model_id": "idm-test",
         "action_mean": [0.5, -0.5, 0.0], "action_std": [2.0, 3.0, 1.0], "action_low": [-3, -3, 0.0],
         "action_high": [3, 3, 1.0]}
    )  # fmt: skip
    torch.manual_seed(1)
    model = InverseDynamicsModel(config).eval()
    path = model.save(tmp_path / "ckpt" / "idm")
    assert path.name == "idm.safetensors" and path.with_suffix(".json").is_file()
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["action_names"] == list(ACTION_NAMES) and sidecar["action_std"] == [2.0, 3.0, 1.0]
    assert checkpoint_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()

    loaded = load_idm(path, action_dim=3)
    assert loaded.config == config
    pairs = torch.rand(4, 2, 32, 32, 3)
    out = loaded.predict(pairs)
    assert torch.allclose(out, model.predict(pairs))
    assert out.shape == (4, 2, 3) and set(out[..., 2].unique().tolist()) <= {0.0, 1.0}
    # de-normalised: continuous dims are raw outputs scaled by the stored std and mean
    raw = loaded(pairs)
    assert torch.allclose(out[..., 0], raw[..., 0] * 2.0 + 0.5, atol=1e-5)

    with pytest.raises(ActionDimError) as info:
        load_idm(path, action_dim=7)
    message = user_error(info.value)  # the CLI maps it to one `error:` line and exit 2
    assert message is not None and "\n" not in message and "3 action dims" in message and "7" in message

    path.with_suffix(".json").unlink()
    with pytest.raises(Exception, match="no config"):
        load_idm(path)


def test_chunks_cover_every_transition_once():
    assert chunk_starts(9, 4) == [0, 4]
    assert chunk_starts(10, 4) == [0, 4, 5]
    assert chunk_starts(4, 4) == []
    chunks = np.arange(3 * 4 * 1, dtype=np.float32).reshape(3, 4, 1)
    stitched = stitch_chunks(chunks, [0, 4, 5], 10)
    assert stitched.shape == (9, 1)
    assert stitched[:, 0].tolist() == [0, 1, 2, 3, 4, 8, 9, 10, 11]  # the last window replaces the overlap
