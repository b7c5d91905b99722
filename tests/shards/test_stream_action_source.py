"""Shards carry recorded and IDM actions; the stream yields the preferred one as `action`, with
`action_source` naming it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from egocurate.shards.stream import ShardDataset
from egocurate.shards.write import ShardParams, write_shards
from egocurate.testing.catalog import build_sample_catalog
from egocurate.testing.lerobot import add_action_sources


def test_stream_yields_action_by_preference_with_its_source(tmp_path):
    catalog = build_sample_catalog(tmp_path, videos=3, seconds=2.0, fps=15.0, clip_frames=20, clip_step=10,
                                   tokenizer_latents=False)  # fmt: skip
    truth = add_action_sources(catalog)
    out = tmp_path / "shards"
    params = ShardParams(width=64, height=48, val_fraction=0.0, min_frames=13)
    write_shards(catalog, str(out), params=params, progress=False)
    columns = ["clip_id", "video_id", "origin", "num_frames"]

    samples = list(ShardDataset(str(out), columns=columns, shuffle=False, action_source="real,idm,latent"))
    assert len(samples) == 6
    clips = {c["clip_id"]: c for c in catalog.read("clips").to_pylist()}
    for sample in samples:
        action, source = sample["action"], sample["action_source"]
        assert isinstance(action, torch.Tensor) and action.shape[0] == sample["num_frames"] - 1
        start = clips[sample["clip_id"]]["start_frame"]
        if sample["video_id"] == truth["real_video"]:
            assert source == "real" and sample["origin"] == "real"
            expected = truth["real"][
                start : start + sample["num_frames"] - 1
            ]  # pair i: the action at frame i
            assert np.array_equal(action.numpy(), expected)
        elif sample["video_id"] == truth["generated_video"]:
            assert source == "idm" and sample["origin"] == "generated"
            assert sample["idm_model_id"] == "idm-tiny" and sample["idm_checkpoint_hash"] == "deadbeef"
            assert np.array_equal(action.numpy(), truth["idm"][sample["clip_id"]].astype(np.float32))
        else:
            assert source == "latent" and tuple(action.shape) == (sample["num_frames"] - 1, 32)

    only_idm = list(ShardDataset(str(out), columns=["video_id"], shuffle=False, action_source="idm"))
    assert len(only_idm) == 6  # a sample without the action stays (order and resume do not move)
    for sample in only_idm:
        has = sample["video_id"] == truth["generated_video"]
        assert sample["action_source"] == ("idm" if has else "none") and (sample["action"] is None) != has
    with pytest.raises(ValueError, match="action source .zeros. is for exports only"):
        ShardDataset(str(out), action_source="zeros")
