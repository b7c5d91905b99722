"""Sample order of a streaming epoch, and exact resumption when the world size changes.

Pure functions of (shard sizes, seed, epoch, layout, history), so every rank and DataLoader worker
computes the same plan without talking to the others.

The plan, per epoch:

1. **Base order**: shards in a seeded permutation, each shard's rows in file order (the writer
   already stored rows in a random mix of videos).
2. **Rank spans**: the remaining samples are cut into `world_size` contiguous spans of near-equal
   length; each rank's span is cut into one contiguous sub-span per DataLoader worker, sized in
   whole batches so that rank batch ``b`` is exactly worker ``b % num_workers``'s next batch (the
   order in which a ``DataLoader`` returns batches). Contiguous spans mean a worker reads each row
   group it needs once, and no two workers read the same samples.
3. **Bounded shuffle**: each worker permutes its sub-span in blocks of `shuffle_block` samples,
   seeded by (seed, epoch, generation, rank, worker, block). Memory is bounded by one block.

A **generation** is a stretch of training with one layout (world size, workers, batch size). A
checkpoint records each generation's layout and how many batches every rank took. Replaying the
history gives the exact set of samples not yet seen, in order; the next generation lays out only
those. So resuming with another world size yields exactly the remaining samples, none twice.

Why not MosaicML's scheme: it fixes a number of "canonical nodes" up front, and elastic resumption
holds only for world sizes compatible with it. Recording each generation's layout costs a few
integers per resume and works for any world size, worker count or batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    """How one generation consumes samples: ranks x DataLoader workers, batches of `batch_size`."""

    world_size: int = 1
    num_workers: int = 0
    batch_size: int = 1
    shuffle_block: int = 2048

    def __post_init__(self) -> None:
        if self.world_size < 1 or self.num_workers < 0 or self.batch_size < 1 or self.shuffle_block < 1:
            raise ValueError(f"invalid layout {self}")

    @property
    def workers(self) -> int:
        """Consumers per rank (a DataLoader without workers iterates in the main process: one)."""
        return max(1, self.num_workers)


@dataclass(frozen=True)
class Generation:
    """A finished stretch of an epoch: its layout and how many batches each rank consumed."""

    layout: Layout
    steps: int

    def to_dict(self) -> dict:
        return {**asdict(self.layout), "steps": self.steps}

    @classmethod
    def from_dict(cls, data: dict) -> Generation:
        steps = int(data["steps"])
        return cls(Layout(**{k: int(v) for k, v in data.items() if k != "steps"}), steps)


def base_order(shard_rows: Sequence[int], seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Global sample ids of the epoch: shards in a seeded permutation, rows in file order."""
    rows = np.asarray(shard_rows, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(rows)])
    order = np.arange(len(rows))
    if shuffle:
        order = np.random.default_rng(np.random.SeedSequence([seed, epoch, 0x5EED])).permutation(len(rows))
    if len(order) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(offsets[s], offsets[s + 1], dtype=np.int64) for s in order])


def even_spans(total: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous [lo, hi) spans of [0, total); the first `total % parts` get one more."""
    base, extra = divmod(total, parts)
    spans, lo = [], 0
    for p in range(parts):
        hi = lo + base + (1 if p < extra else 0)
        spans.append((lo, hi))
        lo = hi
    return spans


def worker_spans(length: int, workers: int, batch_size: int) -> list[tuple[int, int]]:
    """Contiguous sub-spans of a rank's `length` samples, one per worker, in whole batches.

    The rank's batches are dealt round-robin (batch b to worker b % workers), the last one partial,
    so a DataLoader's round-robin over workers returns the rank's batches in order.
    """
    batches = -(-length // batch_size)
    sizes = [len(range(w, batches, workers)) * batch_size for w in range(workers)]
    if batches:
        sizes[(batches - 1) % workers] -= batches * batch_size - length
    spans, lo = [], 0
    for size in sizes:
        spans.append((lo, lo + size))
        lo += size
    return spans


def block_shuffle(seq: np.ndarray, block: int, key: Sequence[int]) -> np.ndarray:
    """`seq` permuted within consecutive blocks of `block` items, each block seeded by (key, block#)."""
    out = seq.copy()
    for b, lo in enumerate(range(0, len(seq), block)):
        rng = np.random.default_rng(np.random.SeedSequence([*key, b]))
        out[lo : lo + block] = out[lo : lo + block][rng.permutation(min(block, len(seq) - lo))]
    return out


def consumer_sequence(
    remaining: np.ndarray,
    layout: Layout,
    rank: int,
    worker: int,
    seed: int,
    epoch: int,
    generation: int,
    shuffle: bool = True,
) -> np.ndarray:
    """The samples worker `worker` of rank `rank` yields, in order, in this generation."""
    r_lo, r_hi = even_spans(len(remaining), layout.world_size)[rank]
    w_lo, w_hi = worker_spans(r_hi - r_lo, layout.workers, layout.batch_size)[worker]
    seq = remaining[r_lo + w_lo : r_lo + w_hi]
    if not shuffle:
        return seq.copy()
    return block_shuffle(seq, layout.shuffle_block, (seed, epoch, generation, rank, worker))


def rank_lengths(total: int, layout: Layout) -> list[int]:
    return [hi - lo for lo, hi in even_spans(total, layout.world_size)]


def consumed_by_worker(rank_length: int, layout: Layout, steps: int) -> list[int]:
    """Samples each worker of a rank had yielded once the rank consumed `steps` batches."""
    batches = -(-rank_length // layout.batch_size)
    taken = min(steps, batches)
    spans = worker_spans(rank_length, layout.workers, layout.batch_size)
    return [
        min(len(range(w, taken, layout.workers)) * layout.batch_size, hi - lo)
        for w, (lo, hi) in enumerate(spans)
    ]


def samples_after_steps(total: int, layout: Layout, steps: int) -> int:
    """Samples all ranks together consumed after `steps` batches each (short ranks stop early)."""
    return sum(min(steps * layout.batch_size, n) for n in rank_lengths(total, layout))


def steps_for_samples(total: int, layout: Layout, num_samples: int) -> int:
    """The per-rank batch count after which all ranks together consumed `num_samples` samples."""
    lo, hi = 0, -(-total // layout.batch_size) + 1
    while lo < hi:  # smallest steps with samples_after_steps >= num_samples
        mid = (lo + hi) // 2
        if samples_after_steps(total, layout, mid) < num_samples:
            lo = mid + 1
        else:
            hi = mid
    if lo >= -(-total // layout.batch_size) + 1 or samples_after_steps(total, layout, lo) != num_samples:
        raise ValueError(
            f"num_samples={num_samples} is not a whole number of global steps for {total} remaining samples "
            f"with world_size={layout.world_size}, batch_size={layout.batch_size}; pass steps= instead"
        )
    return lo


def remaining_after(
    remaining: np.ndarray, generation: Generation, index: int, seed: int, epoch: int, shuffle: bool = True
) -> np.ndarray:
    """The samples still unseen after `generation` (the `index`-th of the epoch), in plan order."""
    layout = generation.layout
    tails = []
    for rank, length in enumerate(rank_lengths(len(remaining), layout)):
        done = consumed_by_worker(length, layout, generation.steps)
        for worker in range(layout.workers):
            seq = consumer_sequence(remaining, layout, rank, worker, seed, epoch, index, shuffle)
            tails.append(seq[done[worker] :])
    return np.concatenate(tails) if tails else remaining[:0]


def replay(
    base: np.ndarray, history: Sequence[Generation], seed: int, epoch: int, shuffle: bool = True
) -> np.ndarray:
    """The samples not yet consumed after every generation of `history`, in plan order."""
    remaining = base
    for index, generation in enumerate(history):
        remaining = remaining_after(remaining, generation, index, seed, epoch, shuffle)
    return remaining
