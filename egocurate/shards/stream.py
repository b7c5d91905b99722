"""Stream training shards into PyTorch: deterministic, resumable mid-epoch, elastic, no stalls.

``ShardDataset`` is a ``torch.utils.data.IterableDataset`` over a shard folder at any fsspec URL
(local, ``s3://``, ``hf://``). The order of each epoch comes from ``catalog.order``: a seeded shard
permutation, one contiguous span per rank and DataLoader worker (so no sample is read twice), and
a bounded block shuffle. ``state_dict(num_samples=...)`` records where training stands;
``load_state_dict`` on a job with another world size yields exactly the samples not yet seen.

Only the selected Parquet columns are fetched, so a latent-only trainer never reads video bytes.
The next row groups are fetched by a thread while the current ones are consumed, and video
decodes (and the sample transform) run a few samples ahead on threads, in order.

Typical use on each rank::

    ds = ShardDataset("s3://bucket/shards", batch_size=8, num_workers=4, seed=0)
    ds.set_epoch(epoch)
    if resuming:
        ds.load_state_dict(checkpoint["data"])
    for step, batch in enumerate(ds.loader()):
        ...
        checkpoint["data"] = ds.state_dict(steps=step + 1)  # batches this rank took since (re)start
"""

from __future__ import annotations

import collections
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from egocurate.catalog.action_sources import ActionSourceError
from egocurate.catalog.action_sources import parse_action_order as parse_action_order_shared
from egocurate.shards.manifest import Manifest, filesystem, join, read_manifest
from egocurate.shards.order import (
    Generation,
    Layout,
    base_order,
    consumer_sequence,
    replay,
    steps_for_samples,
)

STATE_FORMAT = "egocurate-stream/1"
ARRAY_COMPANIONS = {
    "latent": ("latent_shape", "latent_dtype"),
    "latent_actions": ("latent_actions_shape", "latent_actions_dtype"),
    "real_actions": ("real_actions_shape", "real_actions_dtype"),
    "idm_actions": ("idm_actions_shape", "idm_actions_dtype"),
}
# `action_source` names -> the shard column holding that action (see ``pick_action``).
ACTION_COLUMNS = {"real": "real_actions", "idm": "idm_actions", "latent": "latent_actions"}
ACTION_PROVENANCE = ("lam_model_id", "idm_model_id", "idm_checkpoint_hash")


def parse_action_order(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"real,idm,latent"`` (or a sequence) as a checked tuple; None: no `action` is added.

    The names and their errors are the export's (``catalog.action_sources``). ``zeros``, an
    export's last resort at the dataset's action size, is refused: a stream has no one action
    size, and a sample without an action already comes with ``action_source`` ``"none"``.
    """
    order = parse_action_order_shared(value)
    if "zeros" in order:
        raise ActionSourceError(
            "action source 'zeros' is for exports only: a stream has no one action size, and a "
            f"sample without an action comes with action_source 'none'; got {value!r}"
        )
    return order


def pick_action(sample: dict[str, Any], order: Sequence[str]) -> None:
    """Set ``action`` (num_frames-1, A) float32 and ``action_source`` from the first source in
    `order` the sample holds: row i is the action from frame i to i+1 of ``video`` (a recorded
    action is the one taken at frame i). ``action_source`` is ``"none"`` (and ``action`` None) when
    the sample holds none of them: the sample stays, so order and resume points do not move."""
    for source in order:
        value = sample.get(ACTION_COLUMNS[source])
        if value is not None:
            sample["action"] = value[:-1] if source == "real" else value
            sample["action_source"] = source
            return
    sample["action"], sample["action_source"] = None, "none"


def distributed_rank_world() -> tuple[int, int]:
    """(rank, world size) from torch.distributed when initialised, else RANK / WORLD_SIZE, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def decode_array(data: bytes | None, shape: Sequence[int] | None, dtype: str | None) -> torch.Tensor | None:
    """A tensor from little-endian array bytes: float16 becomes float32, bfloat16 stays bfloat16."""
    if data is None or shape is None:
        return None
    shape = [int(s) for s in shape]
    if dtype == "bfloat16":
        return torch.from_numpy(np.frombuffer(data, dtype="<i2").copy()).view(torch.bfloat16).reshape(shape)
    np_dtype = {"float16": "<f2", "float32": "<f4", None: "<f2"}[dtype]
    return torch.from_numpy(np.frombuffer(data, dtype=np_dtype).astype(np.float32).reshape(shape))


def auto_decode_threads(num_workers: int) -> int:
    """Decode threads per DataLoader worker: the cores a worker gets on this node, 1 to 4.

    Cores are shared by every rank on the node (``LOCAL_WORLD_SIZE``, set by torchrun) and their workers.
    """
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return max(1, min(4, (os.cpu_count() or 1) // (local * max(1, int(num_workers)))))


def window_start(num_frames: int, window: int, seed: int, epoch: int, index: int) -> int:
    """Deterministic start of a `window`-frame window in a clip (a function of seed, epoch, sample)."""
    span = max(0, num_frames - window)
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (span + 1)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples: equal-shaped tensors and numbers are stacked, everything else stays a list."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1:
            out[key] = default_collate(values)  # stacks straight into shared memory inside a worker
        elif all(isinstance(v, bool | int | float) and not isinstance(v, bool) for v in values):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out


def _as_is(batch: Any) -> Any:
    """The DataLoader's collate_fn for a dataset that yields whole batches."""
    return batch


def _batch_buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor; in shared memory inside a DataLoader worker (no copy to send it)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    numel = int(np.prod(shape))
    storage = torch.empty(0, dtype=torch.uint8)._typed_storage()._new_shared(numel, device="cpu")
    return torch.empty(0, dtype=torch.uint8).new(storage).resize_(*shape)


class CountingFile:
    """A read-only file wrapper that counts the bytes read through it (for bytes-per-sample)."""

    def __init__(self, raw: Any, counter: list[int], lock: threading.Lock):
        self.raw, self.counter, self.lock = raw, counter, lock

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        with self.lock:
            self.counter[0] += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        self.raw.close()

    @property
    def closed(self) -> bool:
        return self.raw.closed

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


class _RowGroupReader:
    """Reads row groups of one split's shards (selected columns only), with cached footers."""

    def __init__(
        self, base: str, manifest: Manifest, split: str, columns: list[str] | None, options: dict | None
    ):
        self.base, self.columns, self.options = base, columns, options
        self.shards = manifest.split_shards(split)
        self.fs, _ = filesystem(base, options)
        self.local = "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )
        self.metadata: dict[int, Any] = {}
        self.lock = threading.Lock()
        self.bytes_read = [0]

    def _open(self, shard: int) -> CountingFile:
        url = join(self.base, self.shards[shard].path)
        path = self.fs._strip_protocol(url)
        kwargs = {} if self.local else {"cache_type": "none"}
        return CountingFile(self.fs.open(path, "rb", **kwargs), self.bytes_read, self.lock)

    def _footer(self, shard: int, fh: CountingFile) -> Any:
        """The shard's Parquet footer, read once with two exact range reads and cached."""
        with self.lock:
            cached = self.metadata.get(shard)
        if cached is not None:
            return cached
        fh.seek(-8, 2)
        tail = fh.read(8)
        if tail[4:] != b"PAR1":
            raise ValueError(f"{self.shards[shard].path} is not a complete Parquet file")
        length = int.from_bytes(tail[:4], "little")
        fh.seek(-(8 + length), 2)
        metadata = pq.read_metadata(pa.BufferReader(fh.read(8 + length)))
        with self.lock:
            self.metadata[shard] = metadata
        return metadata

    def read(self, shard: int, group: int) -> dict[str, list]:
        """Row group `group` of shard `shard` as {column: python values}."""
        with self._open(shard) as fh:
            metadata = self._footer(shard, fh)
            pf = pq.ParquetFile(fh, metadata=metadata, pre_buffer=True)
            table = pf.read_row_group(group, columns=self.columns, use_threads=False)
        return {name: table.column(name).to_pylist() for name in table.column_names}


CountingFile.__enter__ = lambda self: self  # type: ignore[attr-defined]
CountingFile.__exit__ = lambda self, *exc: self.close()  # type: ignore[attr-defined]


class ShardDataset(IterableDataset):
    """Samples of one split of a shard folder, partitioned by rank and DataLoader worker.

    - `columns`: the Parquet columns to read (None: all). Array columns (``latent``,
      ``latent_actions``) bring their shape/dtype columns and are yielded as tensors.
    - `batch_size` / `num_workers`: the DataLoader's per-rank settings, which fix how samples are
      dealt to workers (``loader()`` builds a matching DataLoader; a mismatch raises).
    - `decode_video`: yield ``frames`` (uint8 tensor (T, H, W, 3)) decoded from the MP4 bytes;
      `window` decodes only that many consecutive frames, at a deterministic start.
    - `batched`: collate inside the worker and yield whole batches (``loader()`` then builds a
      DataLoader with ``batch_size=None``). Batches, order and resume points are the same as per
      sample; with a video `window` and no `transform`, each window is decoded straight into its
      slot of one (shared-memory) batch buffer, which saves two copies of every frame.
    - `transform`: a picklable callable applied to each sample dict in the worker (for instance
      ``shards.dreamdojo_sample.DreamDojoSample``). It runs on `decode_threads` threads (order kept), so
      it must be thread-safe; ``decode_threads=1`` runs it inline (default: the worker's share of
      the node's cores, see :func:`auto_decode_threads`).
    - `prefetch`: row groups fetched ahead of the one being consumed.
    - `action_source`: a preference order such as ``"real,idm,latent"``: each sample gets
      ``action`` (num_frames-1, A) from the first source it holds and ``action_source`` naming it
      (``"none"`` when it holds none; see :func:`pick_action`).
    """

    def __init__(
        self,
        url: str,
        split: str = "train",
        columns: Sequence[str] | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_block: int = 2048,
        decode_video: bool = False,
        window: int | None = None,
        decode_arrays: bool = True,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        prefetch: int = 2,
        decode_threads: int | None = None,
        storage_options: dict[str, Any] | None = None,
        batched: bool = False,
        action_source: str | Sequence[str] | None = None,
    ):
        super().__init__()
        self.action_order = parse_action_order(action_source)
        if self.action_order and not decode_arrays:
            raise ValueError("action_source needs decode_arrays=True (it slices the decoded arrays)")
        env_rank, env_world = distributed_rank_world()
        self.url, self.split, self.seed, self.shuffle = url, split, int(seed), bool(shuffle)
        self.rank = env_rank if rank is None else int(rank)
        self.world_size = env_world if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world size {self.world_size}")
        self.layout = Layout(self.world_size, int(num_workers), int(batch_size), int(shuffle_block))
        self.decode_video, self.window, self.decode_arrays = decode_video, window, decode_arrays
        self.transform, self.prefetch = transform, max(1, int(prefetch))
        self.decode_threads = (
            auto_decode_threads(num_workers) if decode_threads is None else max(1, int(decode_threads))
        )
        self.storage_options = storage_options
        self.batched = bool(batched)
        self.manifest, self.base = read_manifest(url, storage_options)
        self.shards = self.manifest.split_shards(split)
        self.columns = self._resolve_columns(columns)
        self.epoch = 0
        self.history: list[Generation] = []
        self.bytes_read = 0  # bytes this process read (num_workers=0), for bytes-per-sample figures
        self.samples_yielded = 0

    # ------------------------------------------------------------------ configuration
    def _resolve_columns(self, columns: Sequence[str] | None) -> list[str] | None:
        if columns is None:
            return None
        names = {f["name"] for f in self.manifest.schema}
        wanted = list(dict.fromkeys(columns))
        for source in self.action_order:  # the columns `action` may come from, where the shards have them
            wanted.extend(c for c in (ACTION_COLUMNS[source], *ACTION_PROVENANCE) if c in names)
        wanted = list(dict.fromkeys(wanted))
        for name in list(wanted):
            wanted.extend(c for c in ARRAY_COMPANIONS.get(name, ()) if c not in wanted)
        if (self.decode_video and self.window) and "num_frames" not in wanted:
            wanted.append("num_frames")
        unknown = [c for c in wanted if c not in names]
        if unknown:
            raise ValueError(f"unknown shard columns {unknown}; available: {sorted(names)}")
        return wanted

    @property
    def num_samples(self) -> int:
        """Samples in the split (all ranks)."""
        return sum(s.rows for s in self.shards)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch `epoch` (its own shuffle); a resumed epoch keeps its history."""
        if int(epoch) != self.epoch:
            self.history = []
        self.epoch = int(epoch)

    def loader(self, **kwargs: Any) -> DataLoader:
        """A DataLoader with this dataset's batch size and worker count (and ``collate``)."""
        kwargs.setdefault("collate_fn", _as_is if self.batched else collate)
        kwargs.setdefault("persistent_workers", False)
        if kwargs.get("drop_last"):
            raise ValueError("drop_last would silently skip samples of the last batch of each worker")
        batch_size = None if self.batched else self.layout.batch_size
        return DataLoader(self, batch_size=batch_size, num_workers=self.layout.num_workers, **kwargs)

    # ------------------------------------------------------------------ order and state
    def _remaining(self) -> np.ndarray:
        base = base_order([s.rows for s in self.shards], self.seed, self.epoch, self.shuffle)
        return replay(base, self.history, self.seed, self.epoch, self.shuffle)

    def rank_sequence(self, worker: int) -> np.ndarray:
        """Global sample ids that `worker` of this rank yields in the current generation, in order."""
        return consumer_sequence(
            self._remaining(),
            self.layout,
            self.rank,
            worker,
            self.seed,
            self.epoch,
            len(self.history),
            self.shuffle,
        )

    def state_dict(self, num_samples: int | None = None, steps: int | None = None) -> dict[str, Any]:
        """Where training stands in the epoch: pass the batches each rank took since the epoch began
        or the state was loaded (`steps`), or the samples all ranks took together (`num_samples`)."""
        if (num_samples is None) == (steps is None):
            raise ValueError(
                "pass exactly one of num_samples= (all ranks together) or steps= (batches per rank)"
            )
        if steps is None:
            steps = steps_for_samples(len(self._remaining()), self.layout, int(num_samples))
        history = [*self.history, Generation(self.layout, int(steps))] if steps else list(self.history)
        return {
            "format": STATE_FORMAT,
            "dataset": self.manifest.fingerprint(self.split),
            "split": self.split,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "epoch": self.epoch,
            "history": [g.to_dict() for g in history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`, with this dataset's (possibly different) layout."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a ShardDataset state (format {state.get('format')!r})")
        if state["dataset"] != self.manifest.fingerprint(self.split) or state["split"] != self.split:
            raise ValueError("the state belongs to another shard set or split; refusing to resume from it")
        if state["seed"] != self.seed or state["shuffle"] != self.shuffle:
            raise ValueError(
                f"state has seed={state['seed']} shuffle={state['shuffle']}; dataset was built "
                f"with seed={self.seed} shuffle={self.shuffle}"
            )
        self.epoch = int(state["epoch"])
        self.history = [Generation.from_dict(g) for g in state["history"]]

    # ------------------------------------------------------------------ iteration
    def _worker(self) -> int:
        info = get_worker_info()
        count, worker = (info.num_workers, info.id) if info is not None else (0, 0)
        if max(1, count) != self.layout.workers:
            raise RuntimeError(
                f"ShardDataset was built for num_workers={self.layout.num_workers} but runs in a DataLoader "
                f"with num_workers={count}; build both from the same value (ShardDataset.loader() does)"
            )
        return worker

    def __iter__(self) -> Iterator[Any]:
        if self.batched:
            yield from self._batches(self._worker())
            return
        yield from self._samples(self._rows(self._worker()))

    def _samples(self, raw: Iterator[tuple[dict[str, Any], int]]) -> Iterator[Any]:
        if self.decode_threads <= 1 or not (self.decode_video or self.transform is not None):
            for sample, sample_id in raw:
                yield self._finish(sample, sample_id)
            return
        # Decode ahead: video decodes release the GIL, so a few threads keep the consumer fed.
        pool = ThreadPoolExecutor(max_workers=self.decode_threads, thread_name_prefix="shard-decode")
        ahead: collections.deque[Future] = collections.deque()
        try:
            for sample, sample_id in raw:
                ahead.append(pool.submit(self._finish, sample, sample_id))
                if len(ahead) >= 2 * self.decode_threads:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _rows(self, worker: int) -> Iterator[tuple[dict[str, Any], int]]:
        """(raw sample, global id) in plan order, row groups fetched ahead by a thread pool."""
        seq = self.rank_sequence(worker)
        if len(seq) == 0:
            return
        reader = _RowGroupReader(self.base, self.manifest, self.split, self.columns, self.storage_options)
        group_rows = [np.asarray(s.row_groups, dtype=np.int64) for s in self.shards]
        group_start = np.concatenate([[0], np.cumsum(np.concatenate(group_rows))])
        group_key = [(s, g) for s, rows in enumerate(group_rows) for g in range(len(rows))]
        groups = np.searchsorted(group_start, seq, side="right") - 1
        # First-use order of row groups, and how many samples still need each (to free it after).
        first_use, index = np.unique(groups, return_index=True)
        order = first_use[np.argsort(index)]
        pending = dict(zip(*np.unique(groups, return_counts=True), strict=True))
        futures: dict[int, Future] = {}
        position = {int(g): i for i, g in enumerate(order)}
        next_submit = 0
        pool = ThreadPoolExecutor(max_workers=self.prefetch, thread_name_prefix="shard-prefetch")
        try:
            for sample_id, group in zip(seq.tolist(), groups.tolist(), strict=True):
                horizon = position[group] + 1 + self.prefetch
                while next_submit < min(horizon, len(order)):
                    g = int(order[next_submit])
                    futures[g] = pool.submit(reader.read, *group_key[g])
                    next_submit += 1
                data = futures[group].result()
                row = int(sample_id - group_start[group])
                sample = {name: values[row] for name, values in data.items()}
                pending[group] -= 1
                if pending[group] == 0:
                    del futures[group]
                self.bytes_read = reader.bytes_read[0]
                self.samples_yielded += 1
                yield sample, sample_id
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _batches(self, worker: int) -> Iterator[dict[str, Any]]:
        """Collated batches of this worker's samples, in the order the DataLoader would form them.

        Workers own whole batches (see ``catalog.order.worker_spans``), so batching inside the
        worker gives the same batches, order and resume points as per-sample iteration. A decoded
        window goes straight into its slot of one batch buffer (in shared memory inside a worker).
        """
        pool = (
            ThreadPoolExecutor(max_workers=self.decode_threads, thread_name_prefix="shard-decode")
            if self.decode_threads > 1
            else None
        )
        chunk: list[tuple[dict[str, Any], int]] = []
        try:
            for item in self._rows(worker):
                chunk.append(item)
                if len(chunk) == self.layout.batch_size:
                    yield self._collate_chunk(chunk, pool)
                    chunk = []
            if chunk:
                yield self._collate_chunk(chunk, pool)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _collate_chunk(
        self, chunk: list[tuple[dict[str, Any], int]], pool: ThreadPoolExecutor | None = None
    ) -> dict[str, Any]:
        if not (self.decode_video and self.window) or self.transform is not None:
            return collate(list(self._samples(iter(chunk))))
        from egocurate.media.encode import decode_mp4_into, mp4_size

        videos = [sample.pop("video", None) for sample, _ in chunk]

        def per_sample() -> dict[str, Any]:  # the general path: decode and collate sample by sample
            for (sample, _), video in zip(chunk, videos, strict=True):
                sample["video"] = video
            return collate(list(self._samples(iter(chunk))))

        if any(v is None for v in videos):
            return per_sample()
        height, width = mp4_size(videos[0])
        frames = _batch_buffer((len(chunk), int(self.window), height, width, 3))
        starts = [
            window_start(int(sample["num_frames"]), self.window, self.seed, self.epoch, sample_id)
            for sample, sample_id in chunk
        ]

        def fill(slot: int) -> bool:
            try:
                return decode_mp4_into(videos[slot], starts[slot], frames[slot].numpy()) == self.window
            except ValueError:  # another frame size, or no frames: decode this batch sample by sample
                return False

        slots = range(len(chunk))
        if not all(pool.map(fill, slots) if pool is not None else map(fill, slots)):
            return per_sample()
        samples = []
        for (sample, sample_id), start in zip(chunk, starts, strict=True):
            sample = self._finish(sample, sample_id, decode=False)
            sample["frame_start"] = start
            samples.append(sample)
        batch = collate(samples)
        batch["frames"] = frames
        return batch

    def _finish(self, sample: dict[str, Any], sample_id: int, decode: bool = True) -> Any:
        sample["__index__"] = int(sample_id)
        sample["__epoch__"] = self.epoch
        if self.decode_arrays:
            for name, (shape_col, dtype_col) in ARRAY_COMPANIONS.items():
                if name in sample:
                    sample[name] = decode_array(
                        sample[name], sample.pop(shape_col, None), sample.pop(dtype_col, None)
                    )
        if self.action_order:
            pick_action(sample, self.action_order)
        if decode and self.decode_video and sample.get("video") is not None:
            from egocurate.media.encode import decode_mp4

            start, count = 0, None
            if self.window:
                start = window_start(int(sample["num_frames"]), self.window, self.seed, self.epoch, sample_id)
                count = self.window
            sample["frames"] = torch.from_numpy(decode_mp4(sample.pop("video"), start, count))
            sample["frame_start"] = start
        return self.transform(sample) if self.transform is not None else sample
