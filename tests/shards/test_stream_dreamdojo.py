"""The DreamDojo sample adapter: shapes, dtypes, value layout, and the latent-action window."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from egocurate.catalog import tables
from egocurate.media.encode import decode_mp4
from egocurate.shards.dreamdojo_sample import DreamDojoSample, center_crop_resize, lam_frames
from egocurate.shards.stream import ShardDataset
from egocurate.shards.write import ShardParams, write_shards
from egocurate.testing.catalog import build_sample_catalog


@pytest.fixture(scope="module")
def shard_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("dd_cat")
    catalog = build_sample_catalog(
        root, videos=2, seconds=2.0, clip_frames=20, clip_step=10, tokenizer_latents=False
    )
    # One more clip with no latent actions: it must keep DreamDojo's online-LAM placeholder.
    clip = catalog.read("clips").slice(0, 1).to_pylist()[0]
    clip.update(clip_id="no_latents_clip", start_frame=5, end_frame=25)
    catalog.append(tables.CLIPS, pa.Table.from_pylist([clip]))
    out = root / "shards"
    write_shards(
        catalog, str(out), params=ShardParams(width=640, height=480, val_fraction=0.0), progress=False
    )
    return str(out)


def test_samples_have_dreamdojo_shapes_and_latent_actions(shard_url):
    adapter = DreamDojoSample(seed=3)
    ds = ShardDataset(shard_url, columns=DreamDojoSample.columns, batch_size=2, transform=adapter)
    raw = {s["clip_id"]: s for s in ShardDataset(shard_url, columns=["clip_id", "video"])}
    samples = list(ds)
    assert len(samples) == len(raw) == 5
    for sample in samples:
        video, lam, action = sample["video"], sample["lam_video"], sample["action"]
        assert video.dtype == torch.uint8 and video.shape == (3, 13, 480, 640)
        assert lam.dtype == torch.float32 and lam.shape == (24, 240, 320, 3)
        assert float(lam.min()) >= 0.0 and float(lam.max()) <= 1.0
        assert action.dtype == torch.float32 and action.shape == (12, 384)
        assert sample["num_frames"] == 13 and sample["fps"] == 15 and sample["dataset"] == "human_video"
        assert torch.count_nonzero(action[:, :352]) == 0
        start = sample["frame_start"]
        # The 13 frames are exactly frames [start, start+13) of the shard clip, upscaled to 480x640.
        frames = torch.from_numpy(decode_mp4(raw[sample["__key__"]]["video"])).permute(3, 0, 1, 2)
        expected = center_crop_resize(frames[:, start : start + 13].contiguous(), 480, 640)
        assert torch.equal(video, expected)
        # lam_video is the 12 consecutive pairs: 0,1,1,2,...,11,12.
        assert torch.equal(lam[1], lam[2]) and torch.equal(lam[-2], lam[-3])
        assert torch.allclose(lam[0], lam_frames(video)[0])
        if sample["__key__"] == "no_latents_clip":
            assert not sample["latent_action_precomputed"] and torch.all(action[:, 352:] == 1)
        else:
            # Sample catalog latents hold the pair index in dim 1: the window's pairs are start..start+11.
            assert sample["latent_action_precomputed"]
            assert action[:, 353].tolist() == [float(start + k) for k in range(12)]


def test_windows_are_deterministic_and_vary_by_epoch(shard_url):
    def starts(epoch):
        ds = ShardDataset(
            shard_url, columns=DreamDojoSample.columns, transform=DreamDojoSample(lam_video=False)
        )
        ds.set_epoch(epoch)
        return {s["__key__"]: s["frame_start"] for s in ds}

    first, again, other = starts(0), starts(0), starts(1)
    assert first == again and first != other
    assert all(0 <= v <= 20 - 13 for v in first.values())


def test_center_crop_matches_the_trainer_arithmetic():
    wide = (
        torch.arange(2 * 3 * 90 * 160, dtype=torch.int64)
        .remainder(251)
        .to(torch.uint8)
        .reshape(3, 2, 90, 160)
    )
    out = center_crop_resize(wide, 480, 640)
    assert out.shape == (3, 2, 480, 640) and out.dtype == torch.uint8
    # 160x90 is wider than 4:3: crop to int(90 * 4/3) = 120 wide, offset (160 - 120) // 2 = 20.
    cropped = wide[:, :, :, 20:140]
    assert torch.equal(
        out, torch.nn.functional.interpolate(cropped.contiguous(), (480, 640), mode="bilinear")
    )


def test_short_clips_are_refused():
    adapter = DreamDojoSample()
    with pytest.raises(ValueError, match="fewer than the 13"):
        adapter.window_start(12, 0, 0)
    action, flag = adapter.actions(torch.zeros(5, 32), 0)
    assert not flag and torch.all(action[:, -32:] == 1) and np.isclose(float(action[:, :-32].abs().sum()), 0)


@pytest.mark.parametrize("workers", [0, 2])
def test_batched_loader_gives_the_same_batches_as_per_sample_collation(shard_url, workers):
    """`batched=True` decodes windows straight into one batch buffer; the batches must not change."""

    def batches(batched: bool) -> list[dict]:
        ds = ShardDataset(
            shard_url, columns=["clip_id", "video"], batch_size=2, num_workers=workers,
            decode_video=True, window=13, batched=batched, decode_threads=2,
        )  # fmt: skip
        return list(ds.loader())

    plain, batched = batches(False), batches(True)
    assert [b["clip_id"] for b in batched] == [b["clip_id"] for b in plain]
    assert sum(len(b["clip_id"]) for b in batched) == 5  # the last batch is partial
    for a, b in zip(plain, batched, strict=True):
        assert set(a) == set(b)
        assert b["frames"].dtype == torch.uint8 and b["frames"].shape == a["frames"].shape
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["frame_start"], b["frame_start"])
        assert torch.equal(a["__index__"], b["__index__"])


def test_decoding_into_a_buffer_equals_decode_mp4(shard_url):
    from egocurate.media.encode import decode_mp4_into, mp4_size

    video = next(iter(ShardDataset(shard_url, columns=["clip_id", "video"])))["video"]
    out = np.zeros((5, *mp4_size(video), 3), np.uint8)
    assert decode_mp4_into(video, 4, out) == 5
    assert np.array_equal(out, decode_mp4(video, 4, 5))
    with pytest.raises(ValueError, match="frame size"):
        decode_mp4_into(video, 0, np.zeros((2, 10, 10, 3), np.uint8))
