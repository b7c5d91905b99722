"""Train NVIDIA DreamDojo on egocurate shards, with the precomputed latent actions used as stored.

Two names for DreamDojo's experiment config (its YAML files under ``configs/`` are merged into the
Python defaults of ``cosmos_predict2/experiments/base/action.py``; ``_target_`` strings are resolved
with ``pydoc.locate``, so nothing here is imported until the trainer builds the objects):

- ``egocurate.integrations.dreamdojo.ShardVideoDataset``: a map-style dataset (DreamDojo's
  dataloader wraps the dataset in a ``DistributedSampler``) over one or more shard folders. Each
  item is the sample dict of DreamDojo's ``VideoDataset`` (``video`` uint8 (3, 13, 480, 640),
  ``lam_video`` (24, 240, 320, 3), ``action`` (12, 384) ...) with the clip's stored latent actions at
  ``action[:, 352:384]`` and ``latent_action_precomputed`` True. ``fps`` is the rate the clip was
  rendered at, a float (upstream's loaders send a constant: 30 or 4); DreamDojo's RoPE scales time
  by it and asserts one rate per video batch (at batch size > 1), so the folders of one run
  should share one rendered rate.
- ``egocurate.integrations.dreamdojo.PrecomputedActionVideo2WorldModelRectifiedFlow``: DreamDojo's
  ``ActionVideo2WorldModelRectifiedFlow`` whose ``forward`` keeps precomputed latent actions.

Upstream's ``Text2WorldModelRectifiedFlow.forward`` (commit ``UPSTREAM_COMMIT``) does::

    lam_video = rearrange(data_batch["lam_video"], "b (p t) h w c -> (b p) t h w c", t=2)
    latent_action = self.lam.lam({"videos": lam_video})["z_rep"].squeeze()
    latent_action = rearrange(latent_action, "(t b) d -> b t d", t=data_batch["action"].shape[1])
    data_batch["action"][:, :, -32:] = data_batch["action"][:, :, -32:] * latent_action

so it overwrites ``action[..., 352:384]`` with ``placeholder * online LAM``, and it reads the LAM
output back time-major after flattening it sample-major: at batch size B > 1 sample b receives
pairs of other samples. During the upstream call the subclass puts :class:`PrecomputedAwareLAM` in
place of ``self.lam.lam``. It answers ones for samples flagged ``latent_action_precomputed`` (so the
product leaves the stored values bit for bit; the LAM does not even run when every sample is
precomputed), runs the real LAM for the others, and returns its rows in the time-major order
upstream reads back, so each sample gets its own pairs at any B. No DreamDojo file is patched.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from egocurate.shards.dreamdojo_sample import ACTION_DIM, LATENT_DIM, DreamDojoSample
from egocurate.shards.manifest import ShardInfo, filesystem, join, read_manifest
from egocurate.shards.stream import ARRAY_COMPANIONS, decode_array

UPSTREAM_REPO = "https://github.com/NVIDIA/DreamDojo"
UPSTREAM_COMMIT = "02f119b759d5c7f84a399fdeea3c6e82e7ed6cff"
UPSTREAM_MODEL = (
    "cosmos_predict2._src.predict2.action.models.action_conditioned_video2world_rectified_flow_model."
    "ActionVideo2WorldModelRectifiedFlow"
)
FLAG = "latent_action_precomputed"
SPLITS = {"train": ("train",), "val": ("val",), "test": ("val",), "full": ("train", "val")}


# ----------------------------------------------------------------------------- the dataset
class ShardVideoDataset(torch.utils.data.Dataset):
    """DreamDojo training samples from egocurate shard folders (local or any fsspec URL).

    `dataset_path`: one shard folder (or manifest URL) or a list of them, as DreamDojo's
    ``MultiVideoActionDataset`` takes. `data_split`: ``train``, ``val`` (``test`` reads ``val``) or
    ``full`` (both). `randomize`: draw the 13-frame window at random on every read, like upstream's
    ``VideoDataset``; False gives the deterministic window of (seed, epoch, index). The other
    keyword arguments DreamDojo's default dataset config carries (``time_division_factor``,
    ``height``, ``width``, ``single_base_index``, ...) are accepted and ignored, so a YAML override
    of ``_target_`` alone is enough.
    """

    def __init__(
        self,
        dataset_path: str | Sequence[str],
        num_frames: int = 13,
        data_split: str = "train",
        randomize: bool = True,
        seed: int = 0,
        lam_video: bool = True,
        dataset: str = "human_video",
        storage_options: dict[str, Any] | None = None,
        **upstream_kwargs: Any,
    ):
        super().__init__()
        if data_split not in SPLITS:
            raise ValueError(f"data_split {data_split!r}: expected one of {sorted(SPLITS)}")
        paths = [dataset_path] if isinstance(dataset_path, str) else [str(p) for p in dataset_path]
        self.transform = DreamDojoSample(
            num_frames=num_frames, dataset=dataset, seed=seed, lam_video=lam_video
        )
        self.randomize, self.epoch, self.storage_options = bool(randomize), 0, storage_options
        self.entries: list[tuple[str, ShardInfo]] = []
        self.columns: list[str] = []
        for path in paths:
            manifest, base = read_manifest(path, storage_options)
            names = {f["name"] for f in manifest.schema}
            wanted = [c for c in DreamDojoSample.columns if c in names]
            for name in list(wanted):
                wanted += [c for c in ARRAY_COMPANIONS.get(name, ()) if c in names]
            self.columns = self.columns or wanted
            for split in SPLITS[data_split]:
                if split in {s.split for s in manifest.shards}:
                    self.entries += [(base, s) for s in manifest.split_shards(split)]
        groups = [
            (e, g, rows) for e, (_, s) in enumerate(self.entries) for g, rows in enumerate(s.row_groups)
        ]
        self.groups = [(e, g) for e, g, _ in groups]
        self.starts = np.concatenate([[0], np.cumsum([rows for _, _, rows in groups], dtype=np.int64)])
        if len(self) == 0:
            raise ValueError(f"no {data_split!r} samples in {paths}")
        self._cached: tuple[int, dict[str, list]] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def set_epoch(self, epoch: int) -> None:
        """The epoch that fixes the windows when `randomize` is False."""
        self.epoch = int(epoch)

    def _row_group(self, group: int) -> dict[str, list]:
        """The selected columns of one row group, cached (a worker reads runs of neighbouring rows)."""
        if self._cached is not None and self._cached[0] == group:
            return self._cached[1]
        entry, index = self.groups[group]
        base, shard = self.entries[entry]
        fs, path = filesystem(join(base, shard.path), self.storage_options)
        with fs.open(path, "rb") as fh:
            table = pq.ParquetFile(fh).read_row_group(index, columns=self.columns)
        data = {name: table.column(name).to_pylist() for name in table.column_names}
        self._cached = (group, data)
        return data

    def raw(self, index: int) -> dict[str, Any]:
        """Shard row `index` with its latent actions decoded (the transform's input)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        group = int(np.searchsorted(self.starts, index, side="right") - 1)
        data = self._row_group(group)
        row = int(index - self.starts[group])
        sample = {name: values[row] for name, values in data.items()}
        for name, (shape_col, dtype_col) in ARRAY_COMPANIONS.items():
            if name in sample:
                sample[name] = decode_array(
                    sample[name], sample.pop(shape_col, None), sample.pop(dtype_col, None)
                )
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.raw(int(index))
        sample["__index__"] = int(index)
        sample["__epoch__"] = random.getrandbits(31) if self.randomize else self.epoch
        return self.transform(sample)


# ----------------------------------------------------------------------------- the model hook
class PrecomputedAwareLAM(nn.Module):
    """Stands in for DreamDojo's ``LatentActionModel`` during one ``forward``.

    Input: ``{"videos": (B*P, 2, h, w, c)}`` flattened sample-major, as upstream builds it. Output:
    ``{"z_rep": (B*P, 1, 1, 32)}`` in the time-major order upstream reads back, holding ones for
    precomputed samples and the real LAM's output for the others.
    """

    def __init__(
        self, inner: nn.Module | None, precomputed: torch.Tensor, batch: int, latent_dim: int = LATENT_DIM
    ):
        super().__init__()
        self.inner, self.batch, self.latent_dim = inner, int(batch), int(latent_dim)
        self.precomputed = precomputed.reshape(-1).bool()
        if self.precomputed.numel() != self.batch:
            raise ValueError(f"{self.precomputed.numel()} precomputed flags for a batch of {self.batch}")

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        videos = batch["videos"]
        pairs = videos.shape[0] // self.batch
        flags = self.precomputed.to(videos.device)
        if bool(flags.all()) or self.inner is None:
            z = torch.ones(self.batch, pairs, 1, 1, self.latent_dim, device=videos.device, dtype=videos.dtype)
        else:
            online = self.inner(batch)["z_rep"]
            z = online.reshape(self.batch, pairs, *online.shape[1:])  # sample-major, as computed
            z = torch.where(flags.view(-1, *[1] * (z.dim() - 1)), torch.ones_like(z), z)
        return {"z_rep": z.transpose(0, 1).reshape(self.batch * pairs, *z.shape[2:])}  # time-major


class precomputed_latent_actions:  # noqa: N801 - used as a `with` statement
    """Within the block, ``lam_module.lam`` is a :class:`PrecomputedAwareLAM` for `data_batch`."""

    def __init__(self, lam_module: nn.Module, data_batch: dict[str, Any]):
        self.lam_module = lam_module
        action = data_batch["action"]
        flags = data_batch.get(FLAG)
        if flags is None:
            flags = torch.zeros(action.shape[0], dtype=torch.bool)
        flags = torch.as_tensor(flags, dtype=torch.bool).reshape(-1)
        if action.shape[-1] != ACTION_DIM:
            raise ValueError(f"action has {action.shape[-1]} dims; the latent slot needs {ACTION_DIM}")
        self.flags, self.batch = flags, int(action.shape[0])

    def __enter__(self) -> PrecomputedAwareLAM:
        self.inner = self.lam_module._modules["lam"]
        wrapper = PrecomputedAwareLAM(self.inner, self.flags, self.batch)
        self.lam_module._modules["lam"] = wrapper  # not a parameter change: state_dict keys stay put
        return wrapper

    def __exit__(self, *exc: object) -> None:
        self.lam_module._modules["lam"] = self.inner


def with_precomputed_latent_actions(base: type) -> type:
    """A subclass of DreamDojo model class `base` whose ``forward`` keeps precomputed latent actions."""

    class Precomputed(base):  # type: ignore[misc, valid-type]
        def forward(self, data_batch: dict[str, Any]) -> Any:
            with precomputed_latent_actions(self.lam, data_batch):
                return super().forward(data_batch)

    Precomputed.__name__ = Precomputed.__qualname__ = f"Precomputed{base.__name__}"
    Precomputed.__module__ = __name__
    return Precomputed


@cache
def _upstream_model() -> type:
    import importlib

    module, _, name = UPSTREAM_MODEL.rpartition(".")
    return with_precomputed_latent_actions(getattr(importlib.import_module(module), name))


def __getattr__(name: str) -> Any:
    """``PrecomputedActionVideo2WorldModelRectifiedFlow`` is built on first use, inside DreamDojo."""
    if name == "PrecomputedActionVideo2WorldModelRectifiedFlow":
        return _upstream_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
