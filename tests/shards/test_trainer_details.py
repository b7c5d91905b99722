"""Trainer-facing details of the DreamDojo sample (issue 21): the frame rate is reported as rendered.

DreamDojo (commit ``UPSTREAM_COMMIT``) passes the sample's ``fps`` through its conditioner
(``ReMapkey``, no dtype cast) into the DiT's 3D RoPE, which scales the temporal positions by
``seq[:T] / fps[:1] * base_fps`` (``VideoRopePosition3DEmb.generate_embeddings``). A 7.5 fps clip
reported as 8 is a different temporal scale, so the field must carry the rate the clip was
rendered at; a float collates to a float64 tensor, which that arithmetic accepts.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from egocurate.integrations.dreamdojo import ShardVideoDataset
from egocurate.shards.dreamdojo_sample import frame_rate
from egocurate.shards.manifest import read_manifest
from egocurate.shards.write import ShardParams, write_shards
from egocurate.testing.catalog import build_sample_catalog


@pytest.fixture(scope="module")
def shards_at_7_5(tmp_path_factory):
    root = tmp_path_factory.mktemp("dd_fps")
    catalog = build_sample_catalog(
        root, videos=1, seconds=3.0, clip_frames=40, clip_step=40, tokenizer_latents=False
    )
    out = root / "shards"
    params = ShardParams(width=160, height=120, fps=7.5, val_fraction=0.0)
    write_shards(catalog, str(out), params=params, progress=False)
    return str(out)


def test_a_7_5_fps_render_is_reported_as_7_5(shards_at_7_5):
    manifest, _ = read_manifest(shards_at_7_5)
    assert manifest.params["rendered_fps"] == [7.5]
    sample = ShardVideoDataset(shards_at_7_5, randomize=False, lam_video=False)[0]
    assert isinstance(sample["fps"], float) and sample["fps"] == 7.5


def test_float_fps_collates_and_feeds_upstreams_rope_scaling():
    """Upstream's RoPE arithmetic on a collated batch: 7.5 and 8 give different temporal scales."""
    seq, freqs = torch.arange(16, dtype=torch.float), torch.rand(8)

    def temporal(fps: float | int) -> torch.Tensor:
        batch = default_collate([{"fps": fps}, {"fps": fps}])["fps"]
        assert batch.min() == batch.max()  # upstream asserts a uniform rate within a video batch
        return torch.outer(seq[:4] / batch[:1] * 24, freqs).float()

    exact, rounded = temporal(7.5), temporal(8)
    assert torch.isfinite(exact).all() and not torch.allclose(exact, rounded)


def test_frame_rate_undoes_the_float32_column_and_refuses_a_missing_rate():
    assert frame_rate(float(np.float32(29.97))) == 29.97  # the shard column is float32
    assert frame_rate(float(np.float32(30000 / 1001))) == pytest.approx(30000 / 1001, rel=1e-6)
    assert frame_rate(np.float32(7.5)) == 7.5 and isinstance(frame_rate(15), float)
    for bad in (None, 0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="frame rate"):
            frame_rate(bad)
