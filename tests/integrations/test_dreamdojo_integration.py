"""DreamDojo's own forward data handling, re-implemented from upstream, consuming our shard samples.

``UpstreamForward`` reproduces, line for line, what ``Text2WorldModelRectifiedFlow.forward`` of
NVIDIA/DreamDojo (commit ``UPSTREAM_COMMIT``, ``text2world_model_rectified_flow.py`` lines 863-869)
does to a batch before the diffusion net sees it, plus ``_normalize_video_databatch_inplace``:

- ``rearrange(lam_video, "b (p t) h w c -> (b p) t h w c", t=2)``: pairs flattened sample-major;
- ``z_rep.squeeze()`` then ``rearrange(z, "(t b) d -> b t d", t=T)``: read back time-major;
- ``action[:, :, -32:] = action[:, :, -32:] * latent_action``;
- ``video = video.to(float) / 127.5 - 1``.

einops is not installed here, so each ``rearrange`` is written as the reshape/transpose it equals.
The real LAM needs DreamDojo's 400k-step checkpoint, which cannot be downloaded in a test; a
deterministic pair probe stands in for it (any per-pair function shows where each output lands).
The batches come from a real ``torch.utils.data.DataLoader`` with a ``DistributedSampler``, as
DreamDojo's ``get_dataloader_with_sampler`` builds it, over real shards written from a catalog.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, default_collate

from egocurate.catalog import tables
from egocurate.integrations import dreamdojo
from egocurate.integrations.dreamdojo import (
    PrecomputedAwareLAM,
    ShardVideoDataset,
    with_precomputed_latent_actions,
)
from egocurate.shards.write import ShardParams, write_shards
from egocurate.testing.catalog import build_sample_catalog


class PairProbe(nn.Module):
    """Stand-in LatentActionModel: one distinct 32-vector per frame pair, (N, 1, 1, 32) like z_rep."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.calls += 1
        videos = batch["videos"]  # (N, 2, h, w, c)
        means = videos.float().mean(dim=(2, 3, 4))  # (N, 2)
        z = (
            means[:, :1] * 3.0
            + means[:, 1:] * torch.arange(1, 33, dtype=torch.float32, device=videos.device)
            + 0.5
        )
        return {"z_rep": z.reshape(-1, 1, 1, 32)}


class LAMHolder(nn.Module):
    """Upstream's ``external.lam.model.LAM`` (a LightningModule) holds the network as ``.lam``."""

    def __init__(self, lam: nn.Module):
        super().__init__()
        self.lam = lam


class UpstreamForward(nn.Module):
    """The batch handling of DreamDojo's ``Text2WorldModelRectifiedFlow.forward`` (see module doc)."""

    def __init__(self):
        super().__init__()
        self.lam = LAMHolder(PairProbe())

    def forward(self, data_batch: dict) -> dict:
        b, pt, h, w, c = data_batch["lam_video"].shape
        lam_video = data_batch["lam_video"].reshape(b * (pt // 2), 2, h, w, c)  # "b (p t) ... -> (b p) t ..."
        with torch.no_grad():
            outputs = self.lam.lam({"videos": lam_video})
        latent_action = outputs["z_rep"].squeeze().to(data_batch["action"].dtype).detach()
        t = data_batch["action"].shape[1]
        latent_action = latent_action.reshape(t, -1, latent_action.shape[-1]).transpose(
            0, 1
        )  # "(t b) d -> b t d"
        data_batch["action"][:, :, -32:] = data_batch["action"][:, :, -32:] * latent_action
        assert data_batch["video"].dtype == torch.uint8, "Video data is not in uint8 format."
        data_batch["video"] = data_batch["video"].to(torch.float32) / 127.5 - 1.0
        data_batch["is_preprocessed"] = True
        return data_batch


Ours = with_precomputed_latent_actions(UpstreamForward)


@pytest.fixture(scope="module")
def shard_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("dd_integration")
    catalog = build_sample_catalog(
        root, videos=2, seconds=2.0, clip_frames=20, clip_step=10, tokenizer_latents=False
    )
    clip = catalog.read("clips").slice(0, 1).to_pylist()[0]
    clip.update(clip_id="no_latents_clip", start_frame=5, end_frame=25)  # falls back to the online LAM
    catalog.append(tables.CLIPS, pa.Table.from_pylist([clip]))
    out = root / "shards"
    write_shards(
        catalog, str(out), params=ShardParams(width=320, height=240, val_fraction=0.0), progress=False
    )
    return str(out)


def loader(dataset, batch_size):
    """DreamDojo's ``get_dataloader_with_sampler`` (one rank here), without drop_last so all samples come."""
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=0)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=default_collate)


def stored(dataset, key_to_index, key, start):
    """The latent actions the shard stores for the sample's 12 pairs."""
    return dataset.raw(key_to_index[key])["latent_actions"][start : start + 12].float()


def expected_online(lam_video_b: torch.Tensor) -> torch.Tensor:
    """What the LAM gives for one sample's own 12 pairs, in order."""
    return PairProbe()({"videos": lam_video_b.reshape(12, 2, *lam_video_b.shape[1:])})["z_rep"].reshape(
        12, 32
    )


@pytest.mark.parametrize("batch_size", [1, 4])
def test_stored_latents_reach_the_model_unchanged_and_per_sample(shard_url, batch_size):
    ds = ShardVideoDataset(shard_url, randomize=False)
    keys = {ds.raw(i)["clip_id"]: i for i in range(len(ds))}
    assert len(ds) == len(keys) == 5
    model, seen = Ours(), set()
    for batch in loader(ds, batch_size):
        assert batch["video"].shape[1:] == (3, 13, 480, 640) and batch["lam_video"].shape[1:] == (
            24,
            240,
            320,
            3,
        )
        lam_video = batch["lam_video"].clone()
        out = model(batch)
        assert out["video"].dtype == torch.float32 and float(out["video"].min()) >= -1.0
        for b, key in enumerate(out["__key__"]):
            seen.add(key)
            got = out["action"][b]
            assert torch.count_nonzero(got[:, :352]) == 0
            start = int(out["frame_start"][b])
            if bool(out["latent_action_precomputed"][b]):
                assert torch.equal(got[:, 352:], stored(ds, keys, key, start))  # bit for bit
                assert got[:, 353].tolist() == [float(start + k) for k in range(12)]  # pairs in order
            else:  # the online LAM, on this sample's own pairs
                assert key == "no_latents_clip"
                assert torch.allclose(got[:, 352:], expected_online(lam_video[b]))
    assert seen == set(keys)


def test_upstream_alone_overwrites_stored_latents_and_mixes_samples(shard_url):
    """The failure the hook prevents: stock forward multiplies the slot and, at B>1, mixes samples."""
    ds = ShardVideoDataset(shard_url, randomize=False)
    batch = default_collate([ds[i] for i in range(4)])
    keep, lam_video = batch["action"].clone(), batch["lam_video"].clone()
    out = UpstreamForward()(batch)
    assert not torch.equal(out["action"][:, :, 352:], keep[:, :, 352:])
    flat = PairProbe()({"videos": lam_video.reshape(48, 2, 240, 320, 3)})["z_rep"].reshape(48, 32)
    # Sample 1, time 0 receives row 0 * 4 + 1 = pair 1 of sample 0, not pair 0 of sample 1.
    assert torch.allclose(out["action"][1, 0, 352:], keep[1, 0, 352:] * flat[1])
    assert not torch.allclose(flat[1], flat[12])


def test_the_lam_does_not_run_when_every_sample_is_precomputed(shard_url):
    ds = ShardVideoDataset(shard_url, randomize=False)
    items = [ds[i] for i in range(len(ds)) if ds.raw(i)["clip_id"] != "no_latents_clip"][:4]
    batch = default_collate(items)
    model = Ours()
    before = batch["action"].clone()
    model(batch)
    assert model.lam.lam.calls == 0 and isinstance(model.lam.lam, PairProbe)  # restored after forward
    assert torch.equal(batch["action"], before)


def test_the_wrapper_orders_rows_time_major():
    flags = torch.tensor([True, False, False])
    probe = PairProbe()
    videos = torch.rand(3 * 12, 2, 4, 4, 3)
    z = PrecomputedAwareLAM(probe, flags, 3)({"videos": videos})["z_rep"].reshape(12, 3, 32)
    own = probe({"videos": videos})["z_rep"].reshape(3, 12, 32)
    assert torch.equal(z[:, 0], torch.ones(12, 32))
    assert torch.equal(z[:, 1], own[1]) and torch.equal(z[:, 2], own[2])
    with pytest.raises(ValueError, match="flags"):
        PrecomputedAwareLAM(probe, flags, 4)


def test_dreamdojo_config_names_resolve_and_upstream_kwargs_are_accepted(shard_url):
    import pydoc

    cls = pydoc.locate("egocurate.integrations.dreamdojo.ShardVideoDataset")
    ds = cls(dataset_path=[shard_url], num_frames=13, data_split="full", time_division_factor=4,
             height=None, width=None, single_base_index=False)  # fmt: skip
    assert len(ds) == 5
    with pytest.raises(ValueError, match="data_split"):
        cls(dataset_path=shard_url, data_split="everything")
    with pytest.raises(ValueError, match="no 'val' samples"):
        cls(dataset_path=shard_url, data_split="val")
    # The model name resolves only inside DreamDojo (it subclasses DreamDojo's model class).
    with pytest.raises(ModuleNotFoundError, match="cosmos_predict2"):
        dreamdojo.PrecomputedActionVideo2WorldModelRectifiedFlow  # noqa: B018
    assert Ours.__name__ == "PrecomputedUpstreamForward" and issubclass(Ours, UpstreamForward)


@pytest.mark.gpu
def test_the_hook_on_cuda_batches(shard_url):
    """DreamDojo's trainer moves the whole batch to CUDA (``misc.to``) before ``forward``."""
    ds = ShardVideoDataset(shard_url, randomize=False)
    batch = default_collate([ds[i] for i in range(4)])
    lam_video = batch["lam_video"].clone()
    cuda = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    out = Ours().cuda()(cuda)
    for b in range(4):
        got = out["action"][b, :, 352:].cpu()
        if bool(batch["latent_action_precomputed"][b]):
            assert torch.equal(got, batch["action"][b, :, 352:])
        else:
            assert torch.allclose(got, expected_online(lam_video[b]), atol=1e-4)
